"""Pure-library tests: prompts, request and row building, the expansion check, configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmrlhf_ray.core.config import load_config
from mmrlhf_ray.data.media import MediaError
from mmrlhf_ray.data.prompts import (
    CRITIQUE_PROMPT,
    EXPANSION_PROMPT,
    chat_messages,
    expansion_prompt,
)
from mmrlhf_ray.generation.config import ExpandConfig, GenerateConfig, ModelSpec, resolve_kind
from mmrlhf_ray.generation.expansion import (
    check_expansion,
    choose_critique,
    critique_request,
    expansion_requests,
    verdict,
)
from mmrlhf_ray.generation.requests import (
    GenRequest,
    Sample,
    build_request,
    generation_rows,
    quarantine_rows,
    rendered_prompt,
    stable_seed,
)
from tests.generation.helpers import png

REPO = Path(__file__).resolve().parents[2]


def test_table7_prompt_is_filled_verbatim():
    text = expansion_prompt("What colour?", "Red.", "Correct, but terse.")
    assert text.startswith("You will receive an image-related question, an answer, and a comment")
    assert (
        "[Question:] What colour? [Answer:] Red. [Human Comment for the answer:] Correct, but terse."
        in text
    )
    assert text.endswith("Expanded Comment:")
    assert "do not answer the question" in EXPANSION_PROMPT
    with pytest.raises(ValueError, match="placeholder 'extra'"):
        expansion_prompt("q", "a", "r", template="{question} {answer} {reason} {extra}")


def test_critique_prompt_official_layout():
    req = critique_request("How many shapes?", "Three.", images=[object()], key="k")
    text = req.messages[0]["content"][-1]["text"]
    assert text.index("[Question]: How many shapes?") < text.index("[LMM Response]: Three.")
    assert text.rstrip().endswith("[Evaluation]:")
    assert text.startswith(CRITIQUE_PROMPT.split("[Question]")[0])
    assert req.messages[0]["content"][0] == {"type": "image"} and req.n == 1


def test_chat_messages_media_first():
    msgs = chat_messages("describe", n_images=2)
    assert [p["type"] for p in msgs[0]["content"]] == ["image", "image", "text"]
    assert [p["type"] for p in chat_messages("where", video=True)[0]["content"]] == [
        "video",
        "text",
    ]


def test_build_request_image_video_and_bad_media():
    spec = ModelSpec(name="m", kind="transformers", path="x", n=3, seed=7)
    row = {"sample_id": "s1", "question": "what colour", "image": png((255, 0, 0))}
    req = build_request(row, spec)
    assert len(req.images) == 1 and req.video is None and req.n == 3
    assert req.seed == stable_seed(7, "m", "s1") == build_request(row, spec).seed  # stable
    frames = [png((i * 40, 0, 0)) for i in range(6)]
    vreq = build_request({"sample_id": "v", "question": "which way", "video_frames": frames}, spec)
    assert vreq.images == [] and len(vreq.video) == spec.max_frames
    assert vreq.messages[0]["content"][0] == {"type": "video"}
    with pytest.raises(MediaError) as err:
        build_request({"sample_id": "b", "question": "q", "image": b"junk"}, spec)
    assert err.value.field == "image"


def test_raw_prompt_verbatim_and_text_only():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    rendered = []

    def render(messages):  # stands in for the chat template; records what it was asked
        rendered.append(messages)
        return "<chat>" + messages[0]["content"][0]["text"]

    assert rendered_prompt(GenRequest("a", msgs), render) == "<chat>hi"
    raw = "[INST] judge this [/INST]"
    assert rendered_prompt(GenRequest("b", msgs, prompt=raw), render) == raw
    assert rendered == [msgs]  # the raw request never went through the template
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match=r"request q7: prompt: .*text only"):
        rendered_prompt(GenRequest("q7", [], images=[image], prompt=raw), render)
    with pytest.raises(ValueError, match=r"request v2: prompt: "):
        rendered_prompt(GenRequest("v2", [], video=[image, image], prompt=raw), render)


def test_generation_rows_flags_and_ids():
    spec = ModelSpec(name="pol", kind="vllm", path="p", n=3, max_tokens=4, logprobs=True)
    samples = [
        Sample("a b", [1, 2, 9], "stop", [-1.0, -2.0, -0.5], "P"),
        Sample("  ", [9], "stop", [-0.1], "P"),
        Sample("x y z w", [3, 4, 5, 6], "length", [-1, -1, -1, -1], "P"),
    ]
    row = {"sample_id": "q7", "question": "q", "category": "short", "ground_truth": "{}"}
    out = generation_rows(row, spec, "vllm", samples)
    assert [r["response_id"] for r in out] == ["q7/pol/0", "q7/pol/1", "q7/pol/2"]
    assert [r["is_empty"] for r in out] == [False, True, False]
    assert [r["is_truncated"] for r in out] == [False, False, True]
    assert out[0]["num_tokens"] == 3 and out[0]["token_logprobs"] == [-1.0, -2.0, -0.5]
    settings = json.loads(out[0]["settings"])
    assert settings["n"] == 3 and settings["max_tokens"] == 4 and settings["kind"] == "vllm"
    no_lp = generation_rows(
        row, ModelSpec(name="pol", kind="vllm", path="p", n=1), "vllm", samples[:1]
    )
    assert no_lp[0]["token_logprobs"] is None
    q = quarantine_rows(row, spec, "image", "not decodable")
    assert [r["locator"] for r in q] == ["q7/pol/0", "q7/pol/1", "q7/pol/2"]


def test_verdict_and_expansion_check():
    assert verdict("The answer is incorrect: the circle is blue.") == "negative"
    assert verdict("The response is correct and faithful to the image.") == "positive"
    assert verdict("This is not correct.") == "negative"
    assert verdict("") is None
    orig = "Incorrect: the square is yellow, not red."
    assert check_expansion(orig, "The response is correct, accurate and complete.") == "contradicts"
    assert check_expansion(orig, "The response is wrong because it names the wrong colour.") == "ok"
    assert check_expansion(orig, "Ċ ĠĠ Ġ� ��d|olo� low� \x1f") == "junk"
    assert (
        check_expansion(orig, "The comment discusses the shapes in the picture today.")
        == "no_verdict"
    )
    assert check_expansion(orig, "   ") == "empty"
    assert check_expansion("Fine.", "A longer restatement of the human comment here.") == "ok"


def test_choose_critique_fallback_policy():
    assert choose_critique("orig", "expanded text", "ok", "original") == ("expanded text", False)
    assert choose_critique("orig", "junk", "junk", "original") == ("orig", True)
    assert choose_critique("orig", "junk", "junk", "keep") == ("junk", False)
    assert choose_critique("orig", "", "empty", "keep") == ("orig", True)


def test_expansion_requests_skip_missing_and_existing():
    record = {
        "query_id": "r1",
        "question": "q?",
        "responses": [
            {"text": "A", "score_reason": "Correct."},
            {"text": "B", "score_reason": None},
            {"text": "C", "score_reason": "Wrong.", "critique": "already"},
        ],
    }
    spec = ModelSpec(name="e", kind="vllm", path="p", n=1)
    got = expansion_requests(record, spec, "", overwrite=False, images=[])
    assert [i for i, _ in got] == [0]
    assert (
        "[Answer:] A [Human Comment for the answer:] Correct."
        in got[0][1].messages[0]["content"][-1]["text"]
    )
    assert [i for i, _ in expansion_requests(record, spec, "", overwrite=True, images=[])] == [0, 2]


def test_model_spec_checks_and_kind_resolution():
    with pytest.raises(ValueError, match="kind.*is not one of"):
        ModelSpec(kind="gpt")
    with pytest.raises(ValueError, match="path is required"):
        ModelSpec(name="m", kind="vllm").validate()
    ModelSpec(name="sim", kind="simulated").validate()
    assert resolve_kind(ModelSpec(path="p"), True) == "vllm"
    assert resolve_kind(ModelSpec(path="p"), False) == "transformers"
    with pytest.raises(ValueError, match="fallback"):
        ExpandConfig(fallback="maybe")


@pytest.mark.parametrize("stage,cls", [("generate", GenerateConfig), ("expand", ExpandConfig)])
@pytest.mark.parametrize("profile", ["", ".gpu"])
def test_stage_yaml_loads(stage, cls, profile):
    path = REPO / "configs" / f"{stage}{profile}.yaml"
    assert path.read_text().splitlines()[0].startswith(f"# mmrlhf {stage} --config configs/{stage}")
    cfg = load_config(cls, path)
    specs = cfg.models if stage == "generate" else [cfg.expander]
    assert specs and all(isinstance(s, ModelSpec) for s in specs)
    if profile:
        assert any(s.tensor_parallel_size > 1 for s in specs) or stage == "expand"
        assert all(s.num_gpus >= s.tensor_parallel_size or s.kind == "simulated" for s in specs)


def test_library_imports_no_ray_vllm_deepspeed():
    code = (
        "import sys, mmrlhf_ray.generation.requests, mmrlhf_ray.data.prompts; "
        "print(sorted(m for m in ('ray', 'vllm', 'deepspeed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
