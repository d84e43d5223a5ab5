"""Inputs a stage can trust, with real stages through the CLI: toyworld -> generate
(the toy world's simulated responders, in-process) -> annotate (the oracle).

For a deleted, a truncated and a corrupted part of ``generate``, ``mmrlhf annotate``
exits 2 with one line naming the part before any work starts (annotate never begins);
``mmrlhf generate`` then re-makes exactly that part (the other parts are not touched)
with the same rows as before, and annotate finally reads every generated row.
"""

from __future__ import annotations

import os

import pytest

from mmrlhf_ray.core.cli import main
from mmrlhf_ray.core.stage import StageDir

SIMULATED = (
    "models=[{name: sim-strong, kind: simulated, n: 1}, {name: sim-weak, kind: simulated, n: 2}]"
)


def _mmrlhf(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)


def _flip_middle(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    with open(path, "wb") as f:
        f.write(bytes(data))


def _rows_by_id(stage: StageDir) -> dict[str, dict]:
    return {r["response_id"]: r for r in stage.read().to_pylist()}


def _mtimes(stage: StageDir) -> dict[str, int]:
    return {p: os.stat(p).st_mtime_ns for p in stage.part_paths()}


@pytest.fixture
def run(tmp_path, capsys, monkeypatch) -> str:
    """12 toy-world queries; generate: 12 x (1 + 2) = 36 rows in 8 parts of 3 queries."""
    monkeypatch.setenv("MMRLHF_VERBOSE", "1")  # in-process: keep pytest's streams
    run = str(tmp_path / "run")
    world = ["pool_size=12", "rows_per_shard=4", "benchmark_size=4", "records_size=0"]
    assert _mmrlhf(capsys, "toyworld", f"run_dir={run}", *world, "image_size=32")[0] == 0
    generate = ["input_stage=toyworld", "chunk_size=3", SIMULATED]
    assert _mmrlhf(capsys, "generate", f"run_dir={run}", *generate)[0] == 0
    return run


DAMAGE = [  # (damage, part, what the error says given the part's size before)
    (os.remove, "sim-strong-00001", lambda size: "is missing"),
    (_truncate, "sim-weak-00002", lambda size: f"is truncated ({size - 100} of {size} bytes)"),
    (
        _flip_middle,
        "sim-weak-00003",
        lambda size: "is corrupted (its sha256 differs from the manifest's)",
    ),
]


def test_damaged_upstream_parts_are_named_then_remade_exactly(run, capsys):
    gen = StageDir(run, "generate")
    counts = gen.read_manifest()["counts"]
    assert counts == {"in": 36, "out": 36, "quarantined": 0} and len(gen.part_names()) == 8
    original = _rows_by_id(gen)
    generate = ["generate", f"run_dir={run}", "input_stage=toyworld", "chunk_size=3", SIMULATED]
    for damage, part, says in DAMAGE:
        path = f"{gen.data_dir}/{part}.parquet"
        assert len(_ids_of(path)) == 3 * (2 if "weak" in part else 1)  # 3 queries x n
        before, what = _mtimes(gen), says(os.path.getsize(path))
        damage(path)
        code, out, err = _mmrlhf(capsys, "annotate", f"run_dir={run}")
        assert code == 2 and "Traceback" not in out + err
        assert err.strip().splitlines() == [
            f"mmrlhf annotate: error: stage 'generate' in {run}: part data/{part}.parquet "
            f"{what}: re-run `mmrlhf generate run_dir={run}` to re-make it"
        ]
        assert StageDir(run, "annotate").read_manifest() is None  # no work started
        assert not os.path.exists(f"{run}/annotate")
        code, out, _ = _mmrlhf(capsys, *generate)
        assert code == 0
        assert f"generate: part data/{part}.parquet {what}: re-making part(s) {part}\n" in out
        model = part.rsplit("-", 1)[0]
        assert f"generate: {model}: 1 of 4 parts to do" in out
        after = _mtimes(gen)
        assert [p for p in after if after[p] != before.get(p)] == [path]  # only that part
        assert _rows_by_id(gen) == original  # the same rows, ids and contents
        assert gen.read_manifest()["counts"] == counts and gen.part_problems() == []
    code, out, _ = _mmrlhf(capsys, "annotate", f"run_dir={run}", "queries_per_part=4")
    assert code == 0
    assert "36 generated rows = 36 annotated + 0 quarantined; 12 records" in out
    annotate = StageDir(run, "annotate").read_manifest()
    assert annotate["counts"]["in"] == counts["out"]  # rows in = rows out of the input


def _ids_of(path: str) -> set[str]:
    import pyarrow.parquet as pq

    return set(pq.read_table(path, columns=["response_id"]).column(0).to_pylist())


def test_a_damaged_sub_stage_is_remade_by_its_stage(run, capsys):
    """toyworld/benchmark lives inside toyworld: the error names it and says to re-run
    toyworld, which re-makes only the benchmark's damaged part."""
    from mmrlhf_ray.core.stage import StageInputError, require_done

    bench = StageDir(run, "toyworld/benchmark")
    rows, (part,) = bench.read().to_pylist(), bench.part_names()
    pool_before = _mtimes(StageDir(run, "toyworld"))
    _flip_middle(f"{bench.data_dir}/{part}.parquet")
    with pytest.raises(StageInputError) as error:
        require_done(run, "toyworld/benchmark")
    assert str(error.value) == (
        f"stage 'toyworld/benchmark' in {run}: part data/{part}.parquet is corrupted (its "
        f"sha256 differs from the manifest's): re-run `mmrlhf toyworld run_dir={run}` to "
        f"re-make it"
    )
    world = ["pool_size=12", "rows_per_shard=4", "benchmark_size=4", "records_size=0"]
    code, out, _ = _mmrlhf(capsys, "toyworld", f"run_dir={run}", *world, "image_size=32")
    assert code == 0
    assert "toyworld: parts of toyworld/benchmark do not match: re-making them" in out
    assert f"toyworld/benchmark: part data/{part}.parquet is corrupted" in out
    assert bench.read().to_pylist() == rows and bench.part_problems() == []
    assert _mtimes(StageDir(run, "toyworld")) == pool_before  # the pool is not re-made
