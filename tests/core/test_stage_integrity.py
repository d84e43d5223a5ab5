"""Inputs a stage can trust: the manifest lists every part (rows, bytes, sha256); a
missing, truncated, corrupted or extra part is named before any work; a re-run of the
damaged stage deletes exactly the bad parts so its resume re-makes them."""

from __future__ import annotations

import hashlib
import os

import pyarrow.parquet as pq
import pytest

from mmrlhf_ray.core.stage import StageDir, StageInputError, begin_stage, require_done
from mmrlhf_ray.data.schemas import to_table


def _rows(start: int, n: int) -> list[dict]:
    return [
        {"sample_id": f"s{i:03d}", "question": f"question {i} " * 20}
        for i in range(start, start + n)
    ]


def _finished(run: str, parts: int = 3, rows: int = 4) -> StageDir:
    stage = StageDir(run, "up")
    stage.begin({"up": 1})
    for k in range(parts):
        stage.write_part(f"part-{k:05d}", to_table(_rows(k * rows, rows), "pool"))
    stage.write_quarantine(
        "part-00001", [{"source": "t", "locator": "x", "field": "question", "reason": "bad"}]
    )
    stage.finish(parts * rows + 1, stage.count_rows(), stage.count_rows(quarantine=True))
    return stage


def _file(stage: StageDir, name: str, subdir: str = "data") -> str:
    return f"{stage.root}/{subdir}/{name}.parquet"


def _flip_middle(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    with open(path, "wb") as f:
        f.write(bytes(data))


def _truncate(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_manifest_lists_every_part_with_rows_bytes_and_sha256(tmp_path):
    stage = _finished(str(tmp_path))
    listing = stage.read_manifest()["part_files"]
    assert sorted(listing["data"]) == ["part-00000", "part-00001", "part-00002"]
    assert sorted(listing["quarantine"]) == ["part-00001"]
    entry = listing["data"]["part-00002"]
    path = _file(stage, "part-00002")
    assert entry["rows"] == 4 and entry["bytes"] == os.path.getsize(path)
    assert entry["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert listing["quarantine"]["part-00001"]["rows"] == 1
    assert stage.part_problems() == [] and require_done(str(tmp_path), "up") == stage


@pytest.mark.parametrize(
    "damage, subdir, expected",
    [
        (os.remove, "data", "part data/part-00001.parquet is missing"),
        (_truncate, "data", "part data/part-00001.parquet is truncated ("),
        (_flip_middle, "data", "part data/part-00001.parquet is corrupted (its sha256 differs"),
        (_flip_middle, "quarantine", "part quarantine/part-00001.parquet is corrupted"),
    ],
)
def test_each_damage_is_named_in_one_line(tmp_path, damage, subdir, expected):
    run = str(tmp_path)
    stage = _finished(run)
    damage(_file(stage, "part-00001", subdir))
    with pytest.raises(StageInputError) as error:
        require_done(run, "up")
    message = str(error.value)
    assert message.startswith(f"stage 'up' in {run}: {expected}")
    assert message.endswith(f"re-run `mmrlhf up run_dir={run}` to re-make it")
    assert "\n" not in message and len(stage.part_problems()) == 1


def test_truncated_message_gives_sizes(tmp_path):
    stage = _finished(str(tmp_path))
    path = _file(stage, "part-00000")
    size = os.path.getsize(path)
    _truncate(path)
    (problem,) = stage.part_problems()
    assert problem.what == f"is truncated ({size // 2} of {size} bytes)"


def test_a_part_rewritten_with_fewer_rows_names_the_row_counts(tmp_path):
    stage = _finished(str(tmp_path))
    pq.write_table(to_table(_rows(0, 2), "pool"), _file(stage, "part-00000"))
    with pytest.raises(
        StageInputError, match=r"part-00000.parquet has 2 rows, the manifest says 4"
    ):
        require_done(str(tmp_path), "up")


def test_an_extra_unlisted_part_is_named(tmp_path):
    run = str(tmp_path)
    stage = _finished(run)
    stage.write_part("part-00099", to_table(_rows(100, 2), "pool"))
    with pytest.raises(
        StageInputError, match=r"part data/part-00099.parquet is not in the manifest"
    ):
        require_done(run, "up")
    # read() names it too (no hashing needed for names), before reading any rows
    with pytest.raises(StageInputError, match="part-00099.parquet is not in the manifest"):
        stage.read()


def test_read_checks_the_rows_against_the_manifest(tmp_path):
    run = str(tmp_path)
    stage = _finished(run)
    assert stage.read().num_rows == 12 and stage.read(quarantine=True).num_rows == 1
    with pytest.raises(StageInputError, match=r"read 11 rows from data/, its manifest lists 12"):
        stage.check_rows_read(11)
    os.remove(_file(stage, "part-00002"))
    with pytest.raises(StageInputError, match="part data/part-00002.parquet is missing"):
        stage.read()


def test_old_manifest_without_part_list_is_accepted_unverified(tmp_path):
    run = str(tmp_path)
    stage = _finished(run)
    manifest = stage.read_manifest()
    del manifest["part_files"]
    stage.write_manifest(manifest)
    os.remove(_file(stage, "part-00002"))
    assert require_done(run, "up") == stage and stage.part_problems() == []
    assert stage.read().num_rows == 8  # no list to check against: read as it is


def test_rerun_deletes_exactly_the_bad_parts(tmp_path, capsys):
    run = str(tmp_path)
    stage = _finished(run, parts=5)
    original = {n: open(_file(stage, n), "rb").read() for n in stage.part_names()}
    os.remove(_file(stage, "part-00000"))
    _truncate(_file(stage, "part-00002"))
    _flip_middle(_file(stage, "part-00001", "quarantine"))
    stage.write_part("extra", to_table(_rows(200, 1), "pool"))
    capsys.readouterr()
    assert stage.skip_if_done({"up": 1}) is False
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line.startswith("up: part data/part-00000.parquet is missing")
    assert line.endswith("re-making part(s) part-00000, part-00001, part-00002")
    # the damaged units are gone (a unit = its data part and its quarantine part); the
    # intact parts are untouched, byte for byte
    assert stage.part_names() == ["part-00003", "part-00004"]
    assert stage.part_names(quarantine=True) == []
    for name in stage.part_names():
        assert open(_file(stage, name), "rb").read() == original[name]


def test_begin_stage_remakes_the_damaged_parts_and_keeps_the_rest(tmp_path):
    """The resume path a stage runs: begin_stage -> has_part skips -> finish re-lists."""
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        run_dir: str

    def run_stage() -> tuple[bool, list[str]]:
        out, done = begin_stage(Cfg(str(tmp_path)), "up")
        made = []
        if not done:
            for k in range(3):
                if not out.has_part(f"part-{k:05d}"):
                    out.write_part(f"part-{k:05d}", to_table(_rows(k * 4, 4), "pool"))
                    made.append(f"part-{k:05d}")
            out.finish(12, out.count_rows(), 0)
        return done, made

    assert run_stage() == (False, ["part-00000", "part-00001", "part-00002"])
    stage = StageDir(str(tmp_path), "up")
    before = stage.read().to_pylist()
    assert run_stage() == (True, [])
    _flip_middle(_file(stage, "part-00001"))
    assert run_stage() == (False, ["part-00001"])
    assert stage.read().to_pylist() == before and stage.part_problems() == []
    assert run_stage() == (True, [])


def test_begin_stage_checks_its_inputs_before_work(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        run_dir: str

    run = str(tmp_path)
    up = _finished(run)
    _flip_middle(_file(up, "part-00002"))
    for inputs in (["up"], [StageDir(run, "up")]):
        with pytest.raises(StageInputError, match="part data/part-00002.parquet is corrupted"):
            begin_stage(Cfg(run), "down", inputs=inputs)
    assert StageDir(run, "down").read_manifest() is None  # nothing began


def test_a_settled_part_is_hashed_once_and_a_later_change_still_seen(tmp_path):
    """One pass per input per process: a part older than SETTLED_S keeps its digest while
    its size and mtime stay; rewriting it changes the mtime, so it is hashed again."""
    from mmrlhf_ray.core import parts

    stage = _finished(str(tmp_path))
    path = _file(stage, "part-00001")
    hour_ago = os.stat(path).st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(hour_ago, hour_ago))
    assert stage.part_problems() == []
    (key,) = [k for k in parts._DIGESTS if k[1] == path]  # settled: remembered
    assert key[2:] == (os.path.getsize(path), hour_ago)
    assert stage.part_problems() == []
    _flip_middle(path)
    assert [p.name for p in stage.part_problems()] == ["part-00001"]
