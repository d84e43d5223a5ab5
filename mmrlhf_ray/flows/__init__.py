"""Flows over stages: the whole pipeline and the self-improvement rounds.

The top layer: imports any package of ``mmrlhf_ray``; nothing imports it.
"""
