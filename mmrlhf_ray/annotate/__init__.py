"""Annotation records and preference pairs: generated responses grouped into MM-RLHF
records (oracle, imported or rater labels), then every pair of differing rank with the
paper's tie rule (Sec. 2.3).

Imports ``core``, ``data`` and ``toyworld`` (the oracle).
"""
