"""Hostile files on the data plane (issue 21, items 3 and 6): media paths that leave
their media root, lines the parser cannot take (a 5,000-digit number, nesting, non-UTF-8,
an over-long line), media that are not images, a manifest naming a path as a part. Each
bad line is quarantined with its line number and field and the rest is read; nothing
outside a root is read and no file outside a stage is deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from mmrlhf_ray.annotate_app.tasks import MAX_MEDIA_BYTES, read_media
from mmrlhf_ray.core.stage import StageDir, StageInputError
from mmrlhf_ray.data.media import MediaError
from mmrlhf_ray.data.release import read_release_file
from tests.annotate_app.helpers import png


def _line(qid: str, **media) -> str:
    obj = {
        "id": qid,
        "question": "What colour is the circle?",
        "models_output": ["Red.", "Blue."],
        "final_ranking": [1, 2],
        **media,
    }
    return json.dumps(obj)


def _read(path: Path, root: str, **kw) -> tuple[list[str], dict[int, tuple[str, str]]]:
    rows, problems = [], {}
    for res in read_release_file(str(path), "data", media_root=root, **kw):
        if res.row is not None:
            rows.append(res.row["query_id"])
        else:
            assert res.problem["locator"] == f"line {res.line_no}"
            problems[res.line_no] = (res.problem["field"], res.problem["reason"])
    return rows, problems


def test_media_paths_outside_the_media_root_are_quarantined(tmp_path):
    root = tmp_path / "media"
    (root / "short").mkdir(parents=True)
    (root / "short" / "ok.png").write_bytes(png((255, 0, 0)))
    (tmp_path / "secret.png").write_bytes(png((0, 0, 255)))
    (root / "short" / "link.png").symlink_to(tmp_path / "secret.png")
    lines = [
        _line("a", image="/etc/passwd"),
        _line("b", image="../x"),
        _line("c", image="short/ok.png"),
        _line("d", video="video/../../x"),
        _line("e", image="short/link.png"),  # a symlink out of the root
        _line("f", image=str(root / "short" / "ok.png")),  # absolute, but inside
        _line("g", image="s3://bucket/short/x.png"),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows, problems = _read(path, str(root))
    assert rows == ["c", "f"]
    assert {n: field for n, (field, _) in problems.items()} == {
        1: "image",
        2: "image",
        4: "video",
        5: "image",
        7: "image",
    }
    assert "'/etc/passwd' resolves outside the media root" in problems[1][1]
    # no media root: the working directory is the root
    _, problems = _read(path, "")
    assert {1, 2, 4} <= set(problems)


def test_one_odd_line_is_quarantined_and_the_rest_imported(tmp_path):
    lines = [
        _line("ok-1", image="short/a.png").encode(),
        b'{"id": "big", "question": "q", "rank": ' + b"9" * 5000 + b"}",  # over int's limit
        b"[" * 3000 + b"]" * 3000,  # nesting too deep for the parser
        _line("sup", image="short/a.png", final_ranking=["\u00b2", "1"]).encode(),
        b'{"id": "latin1", "question": "caf\xe9"}',  # not UTF-8
        _line("long", image="short/a.png", question="x" * 9000).encode(),  # over the cap
        _line("ok-2", image="short/a.png").encode(),
    ]
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows, problems = _read(path, str(tmp_path), max_line_bytes=8192)
    assert rows == ["ok-1", "ok-2"]  # line numbers count on past every bad line
    assert sorted(problems) == [2, 3, 4, 5, 6]
    assert problems[2][0] == "line" and "ValueError" in problems[2][1]
    assert problems[3][0] == "line" and "RecursionError" in problems[3][1]
    assert problems[4][0] == "final_ranking" and "'²'" in problems[4][1]  # isdigit, not int
    assert problems[5][0] == "line" and "UnicodeDecodeError" in problems[5][1]
    assert problems[6] == ("line", "longer than 8192 bytes")


def test_annotation_media_must_be_images_within_the_cap(tmp_path):
    text = tmp_path / "credentials"
    text.write_text("[default]\naws_secret_access_key = x\n")
    with pytest.raises(MediaError) as info:
        read_media({"image_path": str(text)})
    assert (info.value.field, info.value.reason) == ("image_path", "not a PNG or JPEG image")
    big = tmp_path / "big.png"
    big.write_bytes(png((1, 2, 3)) + b"\0" * MAX_MEDIA_BYTES)
    with pytest.raises(MediaError, match="over"):
        read_media({"image_path": str(big)})
    with pytest.raises(MediaError) as info:
        read_media({"video_frames": [png((1, 1, 1)), b"GIF89a"]})
    assert info.value.field == "video_frames[1]"
    assert read_media({"image": png((1, 1, 1))})["image"].startswith(b"\x89PNG")


def test_part_names_are_checked_before_a_repair_deletes_anything(tmp_path):
    victim = tmp_path / "victim.parquet"
    victim.write_bytes(b"precious")
    stage = StageDir(str(tmp_path / "run"), "pairs")
    stage.begin({"k": 1})
    stage.write_part("part-00000", pa.table({"x": [1, 2]}))
    stage.finish(2, 2, 0)
    manifest = json.loads(Path(stage.manifest_path).read_text())
    entry = manifest["part_files"]["data"]["part-00000"]
    manifest["part_files"]["data"]["../../../victim"] = entry  # a hostile manifest
    Path(stage.manifest_path).write_text(json.dumps(manifest))
    with pytest.raises(StageInputError, match="not a part name: nothing was deleted"):
        stage.skip_if_done()
    assert victim.read_bytes() == b"precious"
    assert Path(stage.data_dir, "part-00000.parquet").exists()


def test_scores_and_ranks_take_ascii_digits_only():
    from mmrlhf_ray.data.release import ReleaseError, _ranks, _score

    assert _score(" 4 ", "helpfulness") == 4 and _ranks(["2", 1], 2)[0] == [2, 1]
    for odd in ("\u0663", "\uff15"):  # Arabic-Indic three, fullwidth five: float() reads them
        with pytest.raises(ReleaseError, match="not a number"):
            _score(odd, "helpfulness")
    with pytest.raises(ReleaseError) as err:
        _ranks(["\u00b2", 1], 2)
    assert err.value.field == "final_ranking"
