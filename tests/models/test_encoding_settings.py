"""The encoding contract between ref-logps and train-dpo: what it records and refuses."""

import json
import shutil

import pytest

from mmrlhf_ray.models.settings import EncodingMismatch, EncodingSettings, require_same_encoding


def test_same_directory_and_settings_match(tiny_models):
    a = EncodingSettings.of(tiny_models["policy"], 256, 4)
    b = EncodingSettings.of(tiny_models["policy"], 256, 4)
    assert a == b and a.architecture == "qwen2_vl"
    require_same_encoding(a, b.to_dict())  # a match passes


def test_every_kind_of_difference_is_named_with_both_values(tiny_models, tmp_path):
    ref = EncodingSettings.of(tiny_models["policy"], 1024, 10)
    copy = tmp_path / "policy"
    shutil.copytree(tiny_models["policy"], copy)
    assert EncodingSettings.of(copy, 1024, 10) == ref  # same files elsewhere: same contract
    pre = copy / "processor_config.json"  # a larger image resolution
    cfg = json.loads(pre.read_text())
    cfg["image_processor"]["size"]["longest_edge"] += 28 * 28
    pre.write_text(json.dumps(cfg))
    with (copy / "model.safetensors").open("r+b") as f:  # training wrote other weights
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    mine = EncodingSettings.of(copy, 2048, 8)
    assert [d[0] for d in mine.differences(ref)] == [
        "max_response_tokens",
        "max_frames",
        "image_processing",
        "model",
    ]
    with pytest.raises(EncodingMismatch) as err:
        require_same_encoding(mine, ref.to_dict())
    msg = str(err.value)
    assert "\n" not in msg
    assert "max_response_tokens 2048 (train-dpo) vs 1024 (ref-logps)" in msg
    assert "max_frames 8 (train-dpo) vs 10 (ref-logps)" in msg


def test_a_manifest_without_settings_is_refused(tiny_models):
    mine = EncodingSettings.of(tiny_models["policy"], 256, 4)
    with pytest.raises(EncodingMismatch, match="re-run ref-logps"):
        require_same_encoding(mine, None)
