"""The data model: row schemas, media decoding, query groups of pairs, the official
release's readers and writers, and the prompts.

Imports only ``mmrlhf_ray.core`` (a test holds it); every stage package may import it.
"""
