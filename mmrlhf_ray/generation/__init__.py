"""Candidate generation and critique expansion (paper Sec. 2.2-2.3, Table 7): model
specs, generation requests and their rows, and the checks an expanded critique must pass.

Imports ``core`` and ``data``; the engines that run requests are ``models.decoding``
(transformers) and ``actors/generator.py`` (vLLM).
"""
