import pyarrow as pa
import pytest

from mmrlhf_ray.core.stage import CountMismatch, StageDir, require_done
from mmrlhf_ray.data.schemas import to_table, validate_row


def _pool_rows(n):
    return [{"sample_id": f"s{i}", "question": f"q{i}", "image": b"\x89PNG"} for i in range(n)]


def test_parts_manifest_and_idempotence(tmp_path):
    stage = StageDir(str(tmp_path), "toy")
    cfg = {"a": 1}
    assert not stage.is_done(cfg)
    stage.begin(cfg)
    stage.write_part("p0", to_table(_pool_rows(3), "pool"))
    stage.write_part("p1", to_table(_pool_rows(2), "pool"))
    stage.write_quarantine(
        "p1", [{"source": "f", "locator": "line 4", "field": "question", "reason": "missing"}]
    )
    assert stage.has_part("p0") and not stage.has_part("p2")
    manifest = stage.finish(
        rows_in=6, rows_out=stage.count_rows(), rows_quarantined=stage.count_rows(quarantine=True)
    )
    assert manifest["counts"] == {"in": 6, "out": 5, "quarantined": 1}
    assert stage.is_done(cfg) and not stage.is_done({"a": 2})
    assert stage.read().num_rows == 5
    assert stage.read(quarantine=True).column("field").to_pylist() == ["question"]
    assert require_done(str(tmp_path), "toy").root == stage.root


def test_counts_must_add_up(tmp_path):
    stage = StageDir(str(tmp_path), "x")
    stage.begin({})
    with pytest.raises(CountMismatch, match="rows in 5"):
        stage.finish(rows_in=5, rows_out=3, rows_quarantined=1)
    with pytest.raises(FileNotFoundError, match="mmrlhf x"):
        require_done(str(tmp_path), "x")


def test_validate_row_names_fields():
    assert validate_row({"sample_id": "a", "question": "q"}, "pool") == []
    problems = validate_row({"sample_id": "a", "question": ""}, "pool")
    assert problems == ["question: missing or empty"]
    record = {
        "query_id": "q",
        "question": "x",
        "category": "weird",
        "responses": [{"text": "a", "helpfulness": 9, "rank": 0}],
    }
    problems = validate_row(record, "record")
    assert any(p.startswith("category:") for p in problems)
    assert any(p.startswith("responses[0].helpfulness") for p in problems)
    assert any(p.startswith("responses[0].rank") for p in problems)
    table = to_table(
        [{"pair_id": "p", "query_id": "q", "question": "x", "chosen": "a", "rejected": "b"}], "pair"
    )
    assert table.column("margin").type == pa.float32() and table.column("margin").null_count == 1


def test_begin_keeps_parts_of_same_attempt_and_drops_stale_ones(tmp_path):
    stage = StageDir(str(tmp_path), "s")
    stage.begin({"a": 1}, inputs={"up": "f1"})
    stage.write_part("p0", to_table(_pool_rows(2), "pool"))
    key = stage.attempt_key()
    # Same config and inputs (a crash, then a re-run): the part stays, same key.
    assert stage.begin({"a": 1}, inputs={"up": "f1"}) is False
    assert stage.has_part("p0") and stage.attempt_key() == key
    # Upstream re-made (new fingerprint): the part was made from other inputs.
    assert stage.begin({"a": 1}, inputs={"up": "f2"}) is True
    assert not stage.has_part("p0") and stage.attempt_key() != key
    stage.write_part("p0", to_table(_pool_rows(2), "pool"))
    # Another config: stale too; unless the stage checks staleness itself.
    assert stage.begin({"a": 2}, inputs={"up": "f2"}, keep_parts=True) is False
    assert stage.has_part("p0")
    assert stage.begin({"a": 3}, inputs={"up": "f2"}) is True
    assert not stage.has_part("p0")
    assert stage.read_manifest()["attempts"] == 5


def test_a_remade_upstream_makes_downstream_stale(tmp_path, capsys):
    run = str(tmp_path)
    up, down = StageDir(run, "up"), StageDir(run, "down")
    up.begin({"v": 1})
    up.finish(0, 0, 0)
    down.begin({"d": 1}, inputs={"up": up.fingerprint(), "/some/file.jsonl": "x", "policy": "p"})
    down.finish(0, 0, 0)
    assert down.is_done({"d": 1}) and require_done(run, "down") == down
    up.begin({"v": 2})  # upstream re-made under another config
    up.finish(0, 0, 0)
    assert down.stale_inputs() == ["up"] and not down.is_done({"d": 1})
    assert "upstream up changed" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="'down' .* is stale: up changed"):
        require_done(run, "down")


def test_begin_stage_skips_when_done_and_follows_every_input(tmp_path):
    """One opening for every stage: done -> skipped; a re-made upstream stage, another
    set of inputs or a changed non-stage input -> run again (sft's pool included)."""
    from dataclasses import dataclass

    from mmrlhf_ray.core.stage import begin_stage

    @dataclass
    class Cfg:
        run_dir: str
        lr: float = 0.1

    def finish_stage(name, rows=1):
        out = StageDir(str(tmp_path), name)
        out.begin({"rows": rows})
        out.finish(rows, rows, 0)

    def make(cfg, inputs, other=None):
        out, done = begin_stage(cfg, "sft", inputs=inputs, other_inputs=other)
        if not done:
            out.finish(0, 0, 0)
        return done

    with pytest.raises(FileNotFoundError, match="mmrlhf toyworld"):
        begin_stage(Cfg(str(tmp_path)), "sft", inputs=["toyworld"])
    finish_stage("toyworld")
    finish_stage("build-models")
    cfg = Cfg(str(tmp_path))
    assert make(cfg, ["toyworld", "build-models"]) is False
    assert make(cfg, ["toyworld", "build-models"]) is True  # same config and inputs
    assert set(StageDir(str(tmp_path), "sft").read_manifest()["inputs"]) == {
        "toyworld",
        "build-models",
    }
    finish_stage("toyworld", rows=2)  # the world is rebuilt: sft is stale
    assert make(cfg, ["toyworld", "build-models"]) is False
    assert make(cfg, ["toyworld"]) is False  # another set of inputs
    assert make(Cfg(str(tmp_path), lr=0.2), ["toyworld"]) is False  # another config
    assert make(Cfg(str(tmp_path), lr=0.2), ["toyworld"], {"policy": "/m/a"}) is False
    assert make(Cfg(str(tmp_path), lr=0.2), ["toyworld"], {"policy": "/m/a"}) is True
    assert make(Cfg(str(tmp_path), lr=0.2), ["toyworld"], {"policy": "/m/b"}) is False
