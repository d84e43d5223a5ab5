"""Decontamination inside the curate stage: evaluation sets in, matches out (no Ray).

``jobs/curate.py`` calls, in order:

1. :func:`load_reference`: the run's shapes benchmark (``toyworld/benchmark``, when it
   exists and ``decontaminate.benchmark``) and every set in ``decontaminate.sets``,
   their images embedded with the pool's own CLIP embedder (same model, weights, seed,
   decode limits), as :class:`~mmrlhf_ray.curation.decontaminate.Reference`;
2. :meth:`PoolScreen.screen_parts`: exact / perceptual hashes (from the embeddings parts)
   and question n-grams (from the pool parts), part by part;
3. ``cluster_and_select(..., screen=screen)``: CLIP cosine on the same chunks the k-means
   assignment reads; ``screen.exclude`` keeps matched rows out of the sample when
   ``mode: drop``;
4. :meth:`PoolScreen.finish`: the quarantine rows of dropped rows (reason: the set, item
   and signal), ``report/decontamination.{md,csv}`` and the manifest's summary.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.curation.decontaminate import (
    BENCHMARK_STAGE,
    ClipScreen,
    DecontaminateConfig,
    EvalItem,
    EvalSetConfig,
    Matches,
    Reference,
    build_reference,
    report_markdown,
    screen_hashes,
    screen_questions,
    summarize,
)
from mmrlhf_ray.curation.evalsets import load_eval_set
from mmrlhf_ray.data.media import MediaError

QUARANTINE_PART = "decontaminate"


def _benchmark_items(run_dir: str, max_side: int) -> list[EvalItem] | None:
    """The run's toyworld benchmark as evaluation items, or None when it was not made."""
    from mmrlhf_ray.curation.evalsets import _pool_image

    bench = StageDir(run_dir, BENCHMARK_STAGE)
    if (bench.read_manifest() or {}).get("status") != "done":
        return None
    items = []
    for row in bench.read().to_pylist():
        item = EvalItem("shapes-benchmark", str(row["sample_id"]), str(row.get("question") or ""))
        try:
            item.image = _pool_image(row, "", max_side)
        except MediaError as exc:  # counted in the report (eval_items_without_image)
            item.problem = str(exc)
        items.append(item)
    return items


def clip_embedder(embed_cfg: Any):
    """``embed(images) -> float32 (N, dim)`` with the pool's embedder, on the driver's CPU."""
    import torch

    from mmrlhf_ray.models.clip import embed_images, load_clip

    model, preprocess = load_clip(
        embed_cfg.model_name, embed_cfg.model_path, embed_cfg.weights, embed_cfg.model_seed
    )

    def embed(images: list[Any]) -> np.ndarray:
        return embed_images(model, torch.stack([preprocess(im) for im in images]))

    return embed


def load_reference(
    run_dir: str, cfg: DecontaminateConfig, embed_cfg: Any, max_side: int
) -> tuple[Reference, list[str]]:
    """(features of every evaluation item, the names of the sets checked)."""
    items: list[EvalItem] = []
    names: list[str] = []
    if cfg.benchmark:
        bench = _benchmark_items(run_dir, max_side)
        if bench is not None:
            items += bench
            names.append("shapes-benchmark")
    for s in cfg.sets:
        items += load_eval_set(s, max_side)
        names.append(s.name)
    with_images = any(it.image is not None for it in items)
    embed = clip_embedder(embed_cfg) if with_images and "clip" in cfg.signals else None
    return build_reference(items, cfg, embed), names


class PoolScreen:
    """The decontamination of one curate run (see the module docstring for the order)."""

    def __init__(self, cfg: DecontaminateConfig, ref: Reference, set_names: list[str]):
        self.cfg, self.ref, self.set_names = cfg, ref, set_names
        self.matches = Matches()
        self.clip = (
            ClipScreen(ref, cfg.clip_threshold, cfg.clip_center, cfg.clip_probes)
            if "clip" in cfg.signals
            else None
        )
        self.timings = {"reference": round(ref.seconds, 3)}

    def screen_parts(
        self, emb_paths: list[str], pool_paths: list[str], emb_fs: Any = None, pool_fs: Any = None
    ) -> None:
        """Hash and n-gram screens, part by part (global rows in embeddings-part order)."""
        t = time.perf_counter()
        start = 0
        for emb_path, pool_path in zip(emb_paths, pool_paths, strict=True):
            names = pq.read_schema(emb_path, filesystem=emb_fs).names
            cols = ["sample_id", "image_hash"] + (["phash"] if "phash" in names else [])
            emb = pq.read_table(emb_path, columns=cols, filesystem=emb_fs)
            phash = emb.column("phash").combine_chunks() if "phash" in names else None
            screen_hashes(
                start,
                emb.column("image_hash").combine_chunks(),
                None if phash is None else phash.fill_null(0).to_numpy(zero_copy_only=False),
                None if phash is None else pc.is_valid(phash).to_numpy(zero_copy_only=False),
                self.ref,
                self.cfg,
                self.matches,
            )
            if "ngram" in self.cfg.signals and self.ref.ngrams and pool_path:
                pool = pq.read_table(
                    pool_path, columns=["sample_id", "question"], filesystem=pool_fs
                )
                where = pc.index_in(emb.column("sample_id"), value_set=pool.column("sample_id"))
                questions = pool.column("question").take(where).combine_chunks()
                screen_questions(start, questions, self.ref, self.cfg, self.matches)
            start += emb.num_rows
        self.timings["hashes_ngrams"] = round(time.perf_counter() - t, 3)

    def prepare(self, sample: np.ndarray, centres: np.ndarray) -> None:
        if self.clip is not None:
            self.clip.prepare(sample, centres)

    def visit(self, start: int, vectors: np.ndarray, labels: np.ndarray) -> None:
        if self.clip is not None:
            self.clip.visit(start, vectors, labels)

    def exclude(self, total: int) -> np.ndarray | None:
        """Called once after the assignment: matched rows (bool mask) when dropping."""
        if self.clip is not None:
            self.clip.add_to(self.matches)
            self.timings["clip_search_cpu"] = round(self.clip.seconds, 3)
        if self.cfg.mode != "drop":
            return None
        mask = np.zeros(total, dtype=bool)
        mask[self.matches.row_set()] = True
        return mask

    def finish(
        self, out: StageDir, emb_paths: list[str], selected: np.ndarray, source: str
    ) -> dict[str, Any]:
        """Quarantine of dropped rows, the report files; returns the manifest's summary."""
        lookup = _id_lookup(emb_paths, out.fs)
        summary = summarize(self.matches, self.ref, lookup, selected, self.set_names)
        flat = self.matches.flat()
        ids = dict(
            zip(self.matches.row_set().tolist(), lookup(self.matches.row_set()), strict=True)
        )
        _delete_quarantine(out)
        removed = 0
        if self.cfg.mode == "drop" and flat:
            first: dict[int, tuple] = {}
            for m in flat:
                first.setdefault(m[0], m)
            rows = [
                _quarantine(ids[r], self.ref.items[i], sig, s, source)
                for r, i, sig, s in first.values()
            ]
            out.write_quarantine(QUARANTINE_PART, rows)
            removed = len(rows)
        _write_report(out, flat, ids, self.ref, summary, self.cfg)
        return {
            "mode": self.cfg.mode,
            "signals": list(self.cfg.signals),
            "phash_distance": self.cfg.phash_distance,
            "clip_threshold": self.cfg.clip_threshold,
            "ngram": self.cfg.ngram,
            "rows_removed": removed,
            "sets": summary,
            "timings": self.timings,
        }


def _quarantine(sample_id: str, item: EvalItem, signal: str, score: float, source: str) -> dict:
    field = "question" if signal == "ngram" else "image"
    detail = {"phash": f"{int(score)} bits", "clip": f"cosine {score:.4f}"}.get(signal, "equal")
    reason = (
        f"contaminated: matches {item.set_name} item {item.item_id} by {signal} ({detail}); "
        "decontaminate.mode=drop keeps it out of the selection"
    )
    return quarantine_row(f"{source}/decontaminate", sample_id, field, reason, sample_id)


def _delete_quarantine(out: StageDir) -> None:
    """A re-run (e.g. report after drop) must not keep an earlier run's removed rows."""
    from pyarrow import fs as pafs

    path = f"{out.quarantine_dir}/{QUARANTINE_PART}.parquet"
    if out.fs.get_file_info(path).type == pafs.FileType.File:
        out.fs.delete_file(path)


def _id_lookup(emb_paths: list[str], filesystem: Any):
    """``rows -> sample ids`` over the embeddings parts (global rows in part order)."""

    def lookup(rows: np.ndarray) -> list[str]:
        rows = np.asarray(rows, dtype=np.int64)
        if not rows.size:
            return []
        out: list[str] = []
        start = 0
        for p in emb_paths:
            n = pq.ParquetFile(p, filesystem=filesystem).metadata.num_rows
            local = rows[(rows >= start) & (rows < start + n)] - start
            if local.size:
                ids = pq.read_table(p, columns=["sample_id"], filesystem=filesystem)
                out += ids.column("sample_id").take(pa.array(local)).to_pylist()
            start += n
        return out

    return lookup


def _write_report(
    out: StageDir, flat: list, ids: dict, ref: Reference, summary: dict, cfg: DecontaminateConfig
) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["sample_id", "eval_set", "eval_id", "signal", "score"])
    for r, i, sig, score in flat:
        writer.writerow([ids[r], ref.items[i].set_name, ref.items[i].item_id, sig, round(score, 4)])
    for name, text in (
        ("decontamination.csv", buf.getvalue()),
        ("decontamination.md", report_markdown(summary, cfg)),
    ):
        path = out.path("report", name)
        out.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with out.fs.open_output_stream(path) as f:
            f.write(text.encode())


__all__ = ["EvalSetConfig", "PoolScreen", "load_reference"]
