"""Grouping pairs per query, margins, retry/backoff: the pure side of `mmrlhf score`."""

from __future__ import annotations

import base64
import math

import pytest

from mmrlhf_ray.data.groups import group_pairs as _group_pairs
from mmrlhf_ray.service.client import (
    RequestRejected,
    ScoringFailed,
    ServiceUnavailable,
    call_with_retries,
    check_scores,
    compare_payload,
    group_margins,
    score_groups,
)
from mmrlhf_ray.service.config import RetryPolicy
from tests.serve.helpers import all_pairs, pair, png_bytes


def group_pairs(rows, critiques=False):
    return _group_pairs(rows, critiques=critiques, keep_rows=True)


def test_each_distinct_response_once_per_query():
    img = png_bytes()
    rows = all_pairs("q2", 4, image=img) + all_pairs("q1", 3)
    rows += [pair("q1", "r0", "r1", chosen="")]  # invalid: quarantined
    rows += [pair("q1", "r0", "r2", question="another question")]  # disagrees with q1
    groups, bad = group_pairs(rows)
    assert [g.query_id for g in groups] == ["q1", "q2"]
    assert [len(g.responses) for g in groups] == [3, 4]  # not 2*C(K,2) = 6 and 12
    assert [len(g.rows) for g in groups] == [3, 6]
    assert sorted(b["field"] for b in bad) == ["chosen", "question"]
    assert len(rows) == sum(len(g.rows) for g in groups) + len(bad)
    body = compare_payload(groups[1])
    assert base64.b64decode(body["image"]) == img and len(body["responses"]) == 4
    assert "critiques" not in body


def test_margins_by_hand():
    (group,), _ = group_pairs(all_pairs("q", 3))
    rows = group_margins(group, [3.0, 1.0, 2.5])  # r0, r1, r2
    got = {r["pair_id"]: r["margin"] for r in rows}
    assert got == {"q:r0>r1": 2.0, "q:r0>r2": 0.5, "q:r1>r2": -1.5}
    assert {r["margin_source"] for r in rows} == {"reward-service"}


def test_video_frames_are_sampled_and_critiques_sent_when_asked():
    frames = [png_bytes((i, 0, 0)) for i in range(20)]
    rows = all_pairs("v", 2, video_frames=frames, chosen_critique="good", rejected_critique="bad")
    (group,), _ = group_pairs(rows, critiques=True)
    body = compare_payload(group, max_frames=5)
    assert len(body["video_frames"]) == 5 and body["critiques"] == ["good", "bad"]
    assert base64.b64decode(body["video_frames"][-1]) == frames[-1]


def test_the_client_body_is_what_the_server_parses():
    """One wire format: the server's own model reads the client's body back unchanged,
    and resolves it to one scoring input per response with its image."""
    from mmrlhf_ray.service.config import ServeLimits
    from mmrlhf_ray.service.server import resolve_compare_request
    from mmrlhf_ray.service.wire import CompareRequest

    (group,), _ = group_pairs(all_pairs("q", 3, image=png_bytes()))
    body = compare_payload(group)
    request = CompareRequest.model_validate(body)
    assert request.model_dump(exclude_none=True) == body
    inputs = resolve_compare_request(request, ServeLimits())
    assert [i.response for i in inputs] == list(group.responses)
    assert all(len(i.images) == 1 for i in inputs)


def test_check_scores_refuses_bad_answers():
    (group,), _ = group_pairs(all_pairs("q", 2))
    assert check_scores(group, {"scores": [1, 2.5]}) == [1.0, 2.5]
    for answer in ({"scores": [1.0]}, {"scores": [1.0, math.nan]}, {"x": 1}, None):
        with pytest.raises(ScoringFailed):
            check_scores(group, answer)


def test_backoff_delays():
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.2, multiplier=2, max_delay_s=1, jitter=0)
    assert [policy.delay(n) for n in range(4)] == pytest.approx([0.2, 0.4, 0.8, 1.0])
    jittery = RetryPolicy(base_delay_s=1.0, jitter=0.1)
    assert all(0.9 <= jittery.delay(0) <= 1.1 for _ in range(50))


def _flaky(failures: list[Exception], value="ok"):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return value

    return fn, calls


def test_retries_then_succeeds_with_backoff():
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.1, jitter=0)
    fn, calls = _flaky([ServiceUnavailable("503"), ServiceUnavailable("reset")])
    slept = []
    assert call_with_retries(fn, policy, sleep=slept.append) == "ok"
    assert len(calls) == 3 and slept == pytest.approx([0.1, 0.2])


def test_gives_up_loudly_and_never_retries_client_errors():
    policy = RetryPolicy(max_attempts=3, base_delay_s=0, jitter=0)
    fn, calls = _flaky([ServiceUnavailable("503")] * 5)
    with pytest.raises(ScoringFailed, match="after 3 attempts"):
        call_with_retries(fn, policy, what="query q", sleep=lambda s: None)
    assert len(calls) == 3
    fn, calls = _flaky([RequestRejected(422, "image", "bad")])
    with pytest.raises(RequestRejected):
        call_with_retries(fn, policy, sleep=lambda s: None)
    assert len(calls) == 1
    fn, calls = _flaky([KeyError("scores")])
    with pytest.raises(ScoringFailed, match="KeyError"):
        call_with_retries(fn, policy, sleep=lambda s: None)
    assert len(calls) == 1


def test_score_groups_quarantines_refused_queries_and_stops_on_failure():
    rows = all_pairs("a", 3) + all_pairs("b", 2) + all_pairs("c", 2)
    groups, _ = group_pairs(rows)

    def compare(body):  # score = length of the response; query c is "refused"
        if body["question"].endswith("c"):
            raise RequestRejected(422, "image", "not a decodable image")
        return {"scores": [float(len(r)) + i for i, r in enumerate(body["responses"])]}

    policy = RetryPolicy(max_attempts=2, base_delay_s=0)
    scored, bad = score_groups(groups, compare, policy, concurrency=3)
    assert len(scored) == 4 and len(bad) == 1 and bad[0]["field"] == "image"
    assert [r["margin"] for r in scored] == [-1.0, -2.0, -1.0, -1.0]

    def broken(body):
        raise ServiceUnavailable("HTTP 503")

    with pytest.raises(ScoringFailed, match="gave up"):
        score_groups(groups, broken, policy, concurrency=2)


def test_a_refused_response_loses_only_its_own_pairs():
    """A tiny policy sampled a NUL byte: the service refuses that one response (422,
    field responses[i]); the query's other pairs are scored, the refused response's
    pairs quarantined naming it (found on the qwen2.5-vl / internvl shapes-world runs)."""
    rows = all_pairs("a", 4)  # r0 > r1 > r2 > r3: 6 pairs
    rows = [
        {**r, **{k: r[k] + "\x00" for k in ("chosen", "rejected") if r[k] == "answer r2"}}
        for r in rows
    ]
    (group,), _ = group_pairs(rows)
    sent = []

    def compare(body):
        sent.append(list(body["responses"]))
        for i, text in enumerate(body["responses"]):
            if "\x00" in text:
                raise RequestRejected(422, f"responses[{i}]", "contains a NUL character")
        return {"scores": [10.0 - float(text[-1]) for text in body["responses"]]}

    policy = RetryPolicy(max_attempts=1, base_delay_s=0)
    scored, bad = score_groups([group], compare, policy)
    assert sent[1] == ["answer r0", "answer r1", "answer r3"]
    assert {r["pair_id"] for r in scored} == {"a:r0>r1", "a:r0>r3", "a:r1>r3"}
    assert {r["pair_id"]: r["margin"] for r in scored} == {
        "a:r0>r1": 1.0,
        "a:r0>r3": 3.0,
        "a:r1>r3": 2.0,
    }
    assert sorted(b["locator"] for b in bad) == [
        f"pair_id=a:{p}" for p in ("r0>r2", "r1>r2", "r2>r3")
    ]
    assert all(b["field"] == "responses[2]" and "a/r2" in b["reason"] for b in bad)
    assert len(scored) + len(bad) == len(rows)


def test_a_query_left_without_pairs_is_all_quarantined():
    (group,), _ = group_pairs([pair("b", "r0", "r1", rejected="bad\x00")])

    def compare(body):
        raise RequestRejected(422, "responses[1]", "contains a NUL character")

    scored, bad = score_groups([group], compare, RetryPolicy(max_attempts=1, base_delay_s=0))
    assert scored == [] and len(bad) == 1 and "b/r1" in bad[0]["reason"]
