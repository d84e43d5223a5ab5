"""lmms-eval tasks shipped with the project (task YAML + utils per folder).

``shapes/``: the shapes world's held-out benchmark as an lmms-eval task
(``mmrlhf_shapes``), scored per item by the toy world's own judge, so the harness path
gives the same per-item correctness as the in-house scorer. ``mmrlhf_ray.evaluation.lmms`` writes a
runnable copy (YAML with the dataset path filled in, utils, the dataset as Parquet) into
a run directory; lmms-eval loads it through its ``include_path``. Nothing here imports
lmms-eval: it runs in the evaluation environment (docs/GUIDE.md, ## evaluate).
"""
