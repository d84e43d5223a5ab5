"""Optional assist: a tiny (untrained) critique reward model drafts the reasons; the page
shows them marked as drafts; the share of drafts kept is recorded and shown."""

import re

import pytest
from fastapi.testclient import TestClient

from mmrlhf_ray.annotate_app.assist import (
    draft_critiques,
    kept_counts,
    query_items,
    scorer_critic,
    service_request,
)
from mmrlhf_ray.service.config import ServeLimits
from mmrlhf_ray.service.server import resolve_score_request
from mmrlhf_ray.service.wire import ScoreRequest
from serve.annotate_app import AppSettings, create_app
from tests.annotate_app.helpers import PASSWORDS, team_store


@pytest.fixture(scope="module")
def scorer(tiny_models, tmp_path_factory):
    from mmrlhf_ray.reward.model import build_tiny_reward_model
    from mmrlhf_ray.service.server import load_scorer

    path = build_tiny_reward_model(
        tiny_models["policy"], tmp_path_factory.mktemp("rm") / "m", seed=0
    )
    return load_scorer(path, critique_max_new_tokens=6)


@pytest.fixture
def store(run_dir):
    s = team_store(run_dir)
    return s


def test_service_request_meets_the_reward_service_contract(store):
    items = query_items(store, "q-image") + query_items(store, "q-video")
    inputs = resolve_score_request(
        ScoreRequest.model_validate(service_request(items)), ServeLimits()
    )
    assert [i.response for i in inputs] == [i.response for i in items]
    assert [len(i.images) for i in inputs] == [1, 1, 1, 3, 3, 3]  # an image; 3 video frames


def test_drafts_from_the_reward_model_and_the_share_kept(store, scorer, run_dir):
    assert draft_critiques(store, scorer_critic(scorer), batch_queries=2) == 3
    assert draft_critiques(store, scorer_critic(scorer)) == 0  # nothing left to draft
    drafts = store.assist("q-image")
    direct = scorer_critic(scorer)(query_items(store, "q-image"))
    assert drafts == [d.strip() for d in direct] and len(drafts) == 3  # greedy: same text
    assert all(drafts)

    app = create_app(store, AppSettings(run_dir=run_dir, require_reasons=False))
    alice = TestClient(app)
    alice.post("/login", data={"user": "alice", "password": PASSWORDS["alice"]})
    html = alice.get("/q/q-image").text
    assert html.count('class="assist"') == sum(bool(d) for d in drafts)
    csrf = re.search(r'name="csrf" value="([^"]*)"', html).group(1)
    form = {"csrf": csrf, "revision": "0", "ranking_reason": "r"}
    for i, draft in enumerate(drafts):
        form.update(
            {
                f"r{i}_helpfulness": "3",
                f"r{i}_faithfulness": "3",
                f"r{i}_ethics": "5",
                f"r{i}_rank": str(i + 1),
                f"r{i}_reason": draft if i < 2 else "my own",
            }
        )
    assert alice.post("/q/q-image", data=form, follow_redirects=False).status_code == 303
    shown = sum(bool(d) for d in drafts)
    assert store.assist_share() == (shown, sum(bool(d) for d in drafts[:2]))
    lead = TestClient(app)
    lead.post("/login", data={"user": "lead", "password": PASSWORDS["lead"]})
    assert "Reward-model draft reasons: kept unchanged" in lead.get("/lead").text


def test_kept_counts():
    assert kept_counts(None, ["a"]) == (0, 0)
    assert kept_counts(["a", "", "c"], ["a ", "b", "x"]) == (2, 1)
