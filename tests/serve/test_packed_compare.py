"""/v1/compare's scoring forward: the K responses share one prefix computation (packed,
the default) and score exactly as one padded row each (forward=grouped)."""

import base64

from mmrlhf_ray.service.config import ServeLimits
from mmrlhf_ray.service.server import load_scorer, resolve_compare_request
from mmrlhf_ray.service.wire import CompareRequest
from tests.serve.helpers import png_bytes


def test_compare_scores_equal_packed_and_grouped(reward_model_dir):
    req = CompareRequest(
        question="What colour is the circle?",
        image=base64.b64encode(png_bytes()).decode(),
        responses=["It is red.", "It is blue, and there is a big square too.", "No idea.", "Red."],
        critiques=["Correct.", "Wrong colour.", "Off topic.", "Correct and short."],
    )
    inputs = resolve_compare_request(req, ServeLimits())
    packed = load_scorer(reward_model_dir, forward="packed")
    grouped = load_scorer(reward_model_dir, forward="grouped")
    assert packed.model.model.forward_kind == "packed"
    got, ref = packed.score(inputs), grouped.score(inputs)
    assert [c for _, c in got] == [c for _, c in ref] == req.critiques
    for (a, _), (b, _) in zip(got, ref, strict=True):
        assert abs(a - b) < 1e-5
    assert len({round(s, 4) for s, _ in got}) == 4  # four different scores
