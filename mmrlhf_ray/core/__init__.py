"""The run machinery: configs, stage directories and part integrity, the stage table,
the CLI, the console and signals.

It knows no stage: the stage table names each stage's config and job by dotted strings,
imported only when used. Imports nothing else of ``mmrlhf_ray`` (a test holds it).
"""
