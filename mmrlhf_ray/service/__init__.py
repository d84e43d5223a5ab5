"""The reward model's scoring service, without Ray: what a request means (limits, media,
decoding), the scorer behind it, the client that the `score` stage uses, and guarded URL
fetching. ``serve/app.py`` is the thin Ray Serve application over it.

Imports ``core``, ``data`` and ``reward``.
"""
