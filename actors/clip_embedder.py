"""The CLIP embedding actor of `mmrlhf curate`: a callable class for Ray Data ``map_batches``.

    ds.map_batches(ClipEmbedder, fn_constructor_kwargs={...}, batch_format="pyarrow",
                   compute=ActorPoolStrategy(size=2), batch_size=64, num_cpus=1)

Each actor loads the open_clip model once (tiny config offline, ViT-B-32 weights from a
path on GPUs) and turns a batch of pool rows into one output row per input row:
``sample_id, shard, category, image_hash, embedding`` (float16 bytes) or, for a bad row,
``error_field, error_reason``. The work itself is ``mmrlhf_ray.curation.embed.embed_rows``.

``fail_marker`` exists for the fault-tolerance test: if that file exists when the first
batch arrives, the actor deletes it and kills its own process, once. Ray Data restarts
the actor and retries the batch; the driver checks every sample id arrives exactly once.
"""

from __future__ import annotations

import os

import pyarrow as pa

from mmrlhf_ray.core.signals import interrupt_point
from mmrlhf_ray.curation.embed import embed_rows
from mmrlhf_ray.data.schemas import MEDIA_KEYS

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("category", pa.string()),
        pa.field("image_hash", pa.string()),
        pa.field("phash", pa.int64()),  # perceptual hash (decontamination)
        pa.field("embedding", pa.binary()),
        pa.field("error_field", pa.string()),
        pa.field("error_reason", pa.string()),
        pa.field("raw", pa.string()),  # the bad row as JSON (media as sizes), for repair
    ]
)
# Only these pool columns travel to the actors (the text-only ones stay behind).
INPUT_COLUMNS = [
    "sample_id",
    "question",
    *MEDIA_KEYS,
    "reference_answer",
    "category_hint",
]


def read_units(units: pa.Table, filesystem=None) -> pa.Table:
    """Ray Data task: read pool work units (``path``, ``row_group``) into rows + ``path``."""
    import pyarrow.parquet as pq

    tables = []
    for unit in units.to_pylist():
        pf = pq.ParquetFile(unit["path"], filesystem=filesystem)
        columns = [c for c in INPUT_COLUMNS if c in pf.schema_arrow.names]
        table = pf.read_row_group(unit["row_group"], columns=columns)
        tables.append(
            table.append_column("path", pa.array([unit["path"]] * table.num_rows, pa.string()))
        )
    return pa.concat_tables(tables, promote_options="default")


class ClipEmbedder:
    """Ray Data actor: pool rows (pyarrow batch) -> embeddings or quarantine reasons."""

    def __init__(
        self,
        model_name: str,
        model_path: str | None = None,
        weights: str | None = None,
        seed: int = 0,
        threads: int = 1,
        device: str = "cpu",
        max_side: int = 512,
        max_pixels: int = 4096 * 4096,
        long_threshold: int = 128,
        fail_marker: str | None = None,
    ):
        import torch

        from mmrlhf_ray.models.clip import load_clip

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.model, self.preprocess = load_clip(model_name, model_path, weights, seed, device)
        self.device = device
        self.limits = {
            "max_side": max_side,
            "max_pixels": max_pixels,
            "long_threshold": long_threshold,
        }
        self.fail_marker = fail_marker

    def _maybe_fail(self) -> None:
        marker = self.fail_marker
        if marker and os.path.exists(marker):
            try:
                os.remove(marker)
            except FileNotFoundError:  # another actor took it first
                return
            os._exit(1)  # simulate a crashed worker (no cleanup, no exception)

    def __call__(self, batch: pa.Table) -> pa.Table:
        interrupt_point("curate.embed")  # tests: a signal while Ray Data executes
        self._maybe_fail()
        rows = batch.to_pylist()
        for row in rows:
            row["shard"] = _shard_name(row.pop("path", None))
        columns = embed_rows(rows, self.model, self.preprocess, **self.limits)
        return pa.Table.from_pydict(columns, schema=OUTPUT_SCHEMA)


def _shard_name(path: str | None) -> str | None:
    """The pool part a row came from (its file's name without ``.parquet``)."""
    if path is None:
        return None
    base = os.path.basename(str(path))
    return base[: -len(".parquet")] if base.endswith(".parquet") else base
