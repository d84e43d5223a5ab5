"""The annotation app's pure logic (no web framework, no Ray): human raters score, rank
and explain K responses per query; a team lead assigns, adjudicates and exports.

* ``labels``: the paper's rubric (Appendix B), form validation, consensus;
* ``store``: SQLite (WAL) storage, accounts and sessions, assignment, submissions;
* ``agreement``: Krippendorff's alpha (interval) and Kendall's tau-b;
* ``review``: each query's status and the team's agreement report;
* ``tasks``: tasks from the ``generate`` stage or a records stage;
* ``export``: final labels -> ``annotate`` records and the official ``data.jsonl``.

The web layer is ``serve/annotate_app.py``; the entry point ``jobs/annotate_app.py``.
"""
