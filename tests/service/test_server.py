"""The pure serving layer, without Ray: validation, media resolution, the scorer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mmrlhf_ray.service.config import ServeLimits
from mmrlhf_ray.service.server import (
    RequestError,
    RewardScorer,
    ScoringInput,
    all_margins,
    load_scorer,
    resolve_compare_request,
    resolve_score_request,
)
from mmrlhf_ray.service.wire import CompareRequest, ScoreRequest
from tests.serve.helpers import b64, pixel_bomb, png_bytes


def _item(**kw):
    return {"question": "What colour is the circle?", "response": "Red.", **kw}


def _refused(body: dict, limits: ServeLimits, kind=ScoreRequest) -> RequestError:
    resolve = resolve_score_request if kind is ScoreRequest else resolve_compare_request
    with pytest.raises(RequestError) as info:
        resolve(kind.model_validate(body), limits)
    return info.value


def test_valid_requests_resolve_media(media_root):
    limits = ServeLimits(allowed_roots=[str(media_root / "root")])
    img = png_bytes(size=(20, 10))
    req = ScoreRequest.model_validate(
        {
            "items": [
                _item(image=b64(img)),
                _item(image="data:image/png;base64," + b64(img), critique="Correct."),
                _item(image_path="red.png"),
                _item(image_path=str(media_root / "root" / "red.png")),
                _item(video_frames=[b64(img)] * 3),
                _item(),
            ]
        }
    )
    inputs = resolve_score_request(req, limits)
    assert [len(i.images) for i in inputs] == [1, 1, 1, 1, 3, 0]
    assert inputs[0].images[0].size == (20, 10) and inputs[0].images[0].mode == "RGB"
    assert inputs[1].critique == "Correct." and inputs[0].critique is None
    assert inputs[2].images[0].getpixel((0, 0)) == (255, 0, 0)


def test_compare_shares_one_decoded_image():
    body = {"question": "q?", "image": b64(png_bytes()), "responses": ["a", "b", "c"]}
    inputs = resolve_compare_request(CompareRequest.model_validate(body), ServeLimits())
    assert len(inputs) == 3 and inputs[0].images[0] is inputs[2].images[0]


@pytest.mark.parametrize(
    "item, field, status",
    [
        (_item(image="not base64!!"), "items[0].image", 422),
        (_item(image=b64(b"GIF89a garbage")), "items[0].image", 422),
        (_item(image=b64(pixel_bomb(5000, 5000))), "items[0].image", 422),  # > our limit
        (_item(image=b64(pixel_bomb(60000, 60000))), "items[0].image", 422),  # > PIL's too
        (_item(image="data:image/png,xyz"), "items[0].image", 422),
        (_item(image_path="../outside/secret.png"), "items[0].image_path", 403),
        (_item(image_path="link.png"), "items[0].image_path", 403),  # symlink escaping
        (_item(image_path="/etc/passwd"), "items[0].image_path", 403),
        (_item(image_path="missing.png"), "items[0].image_path", 404),
        (_item(image_url="http://169.254.169.254/x.png"), "items[0].image_url", 400),
        (_item(image=b64(png_bytes()), image_path="red.png"), "items[0].image_path", 422),
        (_item(video_frames=[]), "items[0].video_frames", 422),
        (_item(video_frames=[b64(png_bytes())] * 9), "items[0].video_frames", 413),
        (_item(video_frames=[b64(png_bytes()), "%%"]), "items[0].video_frames[1]", 422),
        (_item(question="  "), "items[0].question", 422),
        (_item(question="x" * 8001), "items[0].question", 413),
        (_item(response="a\x00b"), "items[0].response", 422),
    ],
)
def test_bad_items_name_the_field(media_root, item, field, status):
    limits = ServeLimits(allowed_roots=[str(media_root / "root")])
    err = _refused({"items": [item]}, limits)
    assert (err.field, err.status) == (field, status)
    assert err.body() == {"error": {"field": field, "reason": err.reason}}


def test_request_level_limits():
    limits = ServeLimits(max_items=2, max_responses=3)
    assert _refused({"items": []}, limits).field == "items"
    assert _refused({"items": [_item()] * 3}, limits).status == 413
    cmp = {"question": "q", "responses": ["a", "b", "c", "d"]}
    assert _refused(cmp, limits, CompareRequest).field == "responses"
    cmp = {"question": "q", "responses": ["a", "b"], "critiques": ["x"]}
    assert _refused(cmp, limits, CompareRequest).field == "critiques"
    no_roots = _refused({"items": [_item(image_path="a.png")]}, ServeLimits())
    assert no_roots.status == 403 and "allowed_roots" in no_roots.reason


def test_pydantic_refuses_wrong_types_and_extra_fields():
    for body in ({"items": [{"question": 1, "response": "a"}]}, {"items": [_item(extra=1)]}, {}):
        with pytest.raises(ValidationError):
            ScoreRequest.model_validate(body)


def test_all_margins_by_hand():
    got = [(m.i, m.j, m.margin) for m in all_margins([3.0, 1.0, 2.5])]
    assert got == [(0, 1, 2.0), (0, 2, 0.5), (1, 2, -1.5)]


class _CountingModel:
    """Records what the scorer asks of a model (wraps the real reward model)."""

    def __init__(self, inner):
        self.inner, self.critique_calls, self.score_calls = inner, [], []

    def critique(self, inputs):
        self.critique_calls.append(len(inputs))
        return self.inner.critique(inputs)

    def score(self, inputs, critiques):
        self.score_calls.append(len(inputs))
        return self.inner.score(inputs, critiques)


def test_scorer_critiques_then_scores_in_batches(reward_model_dir):
    base = load_scorer(reward_model_dir, max_batch_size=8, critique_max_new_tokens=6)
    from PIL import Image

    img = Image.new("RGB", (32, 32), (0, 200, 0))
    inputs = [ScoringInput(f"Is shape {i} green?", "Yes." * (i + 1), [img]) for i in range(5)]
    inputs[3].critique = "The response is correct."
    whole = base.score(inputs)
    # the critique used is the model's own greedy critique, except where one was given
    generated = base.model.critique([inputs[i] for i in (0, 1, 2, 4)])
    assert [c for _, c in whole] == [*generated[:3], "The response is correct.", generated[3]]
    direct = base.model.score(inputs, [c for _, c in whole])
    assert [s for s, _ in whole] == pytest.approx(direct, abs=1e-5)
    # batches of 2: three forwards, critiques only for items without one, same results
    counting = _CountingModel(base.model)
    small = RewardScorer(counting, max_batch_size=2)
    out = small.score(inputs)
    assert small.forward_calls == 3 and counting.score_calls == [2, 2, 1]
    assert counting.critique_calls == [2, 1, 1]
    assert [c for _, c in out] == [c for _, c in whole]
    assert [s for s, _ in out] == pytest.approx([s for s, _ in whole], abs=1e-5)


def test_scorer_refuses_remote_code(reward_model_dir):
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_scorer(reward_model_dir, trust_remote_code=True)
    with pytest.raises(FileNotFoundError):
        load_scorer(reward_model_dir + "-missing")
