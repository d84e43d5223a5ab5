"""Every metric, benchmark scorer and the run report: the shapes world's toy benchmark,
held-out implicit-reward accuracy, RewardBench ACC / ACC+, and the run's report.

Imports ``core``, ``data`` and the stage packages whose outputs it judges; never ``flows``.
"""
