"""Fixtures for the generation tests: tiny models and small hand-built query tables."""

from __future__ import annotations

import pytest
from PIL import Image

from mmrlhf_ray.media import encode_png
from mmrlhf_ray.schemas import POOL_SCHEMA
from mmrlhf_ray.stage import StageDir


@pytest.fixture(scope="session")
def vl_model(tiny_models) -> str:
    """The project's tiny Qwen2-VL policy (``mmrlhf_ray.models.build_all``)."""
    return tiny_models["policy"]


@pytest.fixture(scope="session")
def text_model(tiny_models, tmp_path_factory) -> str:
    """A tiny Qwen2ForCausalLM (hidden 128, 4 heads) with the project's tokenizer."""
    from gen_tiny_models import build_text_model

    return build_text_model(tmp_path_factory.mktemp("gen_text"), tiny_models["tokenizer"], seed=0)


def png(color: tuple[int, int, int], size: int = 64) -> bytes:
    return encode_png(Image.new("RGB", (size, size), color))


def query_rows(n: int, with_image: bool, bad: int = 0) -> list[dict]:
    """``n`` good queries (+ ``bad`` with undecodable images), POOL columns + category."""
    rows = []
    for i in range(n + bad):
        row = {name: None for name in POOL_SCHEMA.names}
        row.update(
            sample_id=f"q{i:03d}",
            source="test",
            question=f"what colour is shape {i}",
            category="short",
            reference_answer="red",
        )
        if with_image:
            row["image"] = png((40 * i % 255, 100, 200)) if i < n else b"not a png"
        rows.append(row)
    return rows


def toy_rows(n: int, bad: int = 0, videos: int = 0) -> list[dict]:
    """Shapes-world queries with ground truth: ``n`` image ("short") queries, ``videos``
    video queries (4 frames each), then ``bad`` image queries with undecodable bytes
    (sample ids sort in that order)."""
    from mmrlhf_ray.toyworld import make_row

    cats = ["short"] * n + ["video"] * videos + ["short"] * bad
    rows = [make_row("gentest", 0, i, category=c) for i, c in enumerate(cats)]
    for row, cat in zip(rows, cats, strict=True):
        row["category"] = cat
    for row in rows[n + videos :]:
        row["image"] = b"not a png"
    return rows


def write_curate(run_dir: str, rows: list[dict]) -> None:
    """A finished `curate` stage holding ``rows``."""
    import pyarrow as pa

    schema = POOL_SCHEMA.append(pa.field("category", pa.string()))
    stage = StageDir(run_dir, "curate")
    stage.begin({"test": True})
    stage.write_part("part-00000", pa.Table.from_pylist(rows, schema=schema))
    stage.finish(len(rows), len(rows), 0)
