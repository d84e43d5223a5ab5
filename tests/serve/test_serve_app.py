"""The Ray Serve app: local testing mode (no HTTP) and the real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serve.helpers import b64, pixel_bomb, png_bytes

pytestmark = pytest.mark.ray
IMG = b64(png_bytes((0, 0, 255)))


def test_local_testing_mode_handle(ray_session, reward_model_dir):
    from ray import serve

    from mmrlhf_ray.service.config import ServeRewardConfig
    from serve.app import build_app

    cfg = ServeRewardConfig(model_path=reward_model_dir, critique_max_new_tokens=4)
    handle = serve.run(build_app(cfg), name="local-rm", _local_testing_mode=True)
    body = {"question": "Which shape is blue?", "image": IMG, "responses": ["a", "b", "c"]}
    out = handle.compare_json.remote(body).result()
    assert len(out["scores"]) == 3 and len(out["critiques"]) == 3
    s = out["scores"]
    assert [(m["i"], m["j"]) for m in out["margins"]] == [(0, 1), (0, 2), (1, 2)]
    assert [m["margin"] for m in out["margins"]] == pytest.approx(
        [s[0] - s[1], s[0] - s[2], s[1] - s[2]]
    )
    bad = handle.compare_json.remote({"question": "q", "responses": "a"}).result()
    assert bad["status"] == 422 and bad["error"]["field"] == "responses"
    bad = handle.score_json.remote(
        {"items": [{"question": "q", "response": "a", "image": "@@"}]}
    ).result()
    assert (bad["status"], bad["error"]["field"]) == (422, "items[0].image")


def _post(svc, route, body=None, data=None, token=True, headers=None):
    hdrs = {"Authorization": f"Bearer {svc['token']}"} if token else {}
    hdrs.update(headers or {})
    return requests.post(f"{svc['url']}{route}", json=body, data=data, headers=hdrs, timeout=60)


def _alive(svc) -> None:
    assert requests.get(f"{svc['url']}/healthz", timeout=30).json()["status"] == "ok"
    r = _post(
        svc, "/v1/compare", {"question": "Colour?", "image": IMG, "responses": ["Blue.", "Red."]}
    )
    assert r.status_code == 200 and len(r.json()["scores"]) == 2


def test_http_valid_requests(live_service):
    svc = live_service
    body = {"question": "Which colour?", "image": IMG, "responses": ["Blue.", "Red.", "Green."]}
    r = _post(svc, "/v1/compare", body)
    assert r.status_code == 200, r.text
    out = r.json()
    s = out["scores"]
    assert [m["margin"] for m in out["margins"]] == pytest.approx(
        [s[0] - s[1], s[0] - s[2], s[1] - s[2]]
    )
    # /v1/score of the same items with the critiques compare used gives the same scores
    items = [
        {"question": "Which colour?", "image": IMG, "response": resp, "critique": crit}
        for resp, crit in zip(body["responses"], out["critiques"], strict=True)
    ]
    r2 = _post(svc, "/v1/score", {"items": items})
    assert r2.status_code == 200
    assert [x["score"] for x in r2.json()["results"]] == pytest.approx(s, abs=1e-4)
    path_item = {"question": "Which colour?", "image_path": "red.png", "response": "Red."}
    assert _post(svc, "/v1/score", {"items": [path_item]}).status_code == 200
    spec = requests.get(f"{svc['url']}/openapi.json", timeout=30).json()
    assert {"/v1/score", "/v1/compare", "/healthz"} <= set(spec["paths"])
    assert requests.get(f"{svc['url']}/docs", timeout=30).status_code == 200


BAD = [
    (
        "malformed JSON",
        dict(data=b'{"items": [', headers={"Content-Type": "application/json"}),
        400,
        "body",
    ),
    (
        "not JSON at all",
        dict(data=b"\xff\xfe\x00", headers={"Content-Type": "application/json"}),
        400,
        "body",
    ),
    (
        "wrong type",
        dict(body={"items": [{"question": 7, "response": "a"}]}),
        422,
        "items[0].question",
    ),
    ("missing field", dict(body={"items": [{"question": "q"}]}), 422, "items[0].response"),
    ("extra field", dict(body={"items": [], "x": 1}), 422, "x"),
    (
        "huge body",
        dict(data=b"x" * (2 << 20), headers={"Content-Type": "application/json"}),
        413,
        "body",
    ),
    (
        "bad base64",
        dict(body={"items": [{"question": "q", "response": "a", "image": "%%%"}]}),
        422,
        "items[0].image",
    ),
    (
        "pixel bomb",
        dict(
            body={
                "items": [
                    {"question": "q", "response": "a", "image": b64(pixel_bomb(40000, 40000))}
                ]
            }
        ),
        422,
        "items[0].image",
    ),
    (
        "over pixel limit",
        dict(
            body={
                "items": [
                    {"question": "q", "response": "a", "image": b64(png_bytes(size=(600, 600)))}
                ]
            }
        ),
        422,
        "items[0].image",
    ),
    (
        "path traversal",
        dict(
            body={
                "items": [{"question": "q", "response": "a", "image_path": "../outside/secret.png"}]
            }
        ),
        403,
        "items[0].image_path",
    ),
    (
        "url",
        dict(
            body={
                "items": [{"question": "q", "response": "a", "image_url": "http://127.0.0.1:1/x"}]
            }
        ),
        400,
        "items[0].image_url",
    ),
    ("missing token", dict(body={"items": []}, token=False), 401, "authorization"),
    (
        "wrong token",
        dict(body={"items": []}, token=False, headers={"Authorization": "Bearer nope"}),
        401,
        "authorization",
    ),
    (
        "too many responses",
        dict(body={"question": "q", "responses": ["a"] * 17}, route="/v1/compare"),
        413,
        "responses",
    ),
]


@pytest.mark.parametrize("name, kwargs, status, field", BAD, ids=[b[0] for b in BAD])
def test_http_bad_requests_are_4xx_naming_the_field(live_service, name, kwargs, status, field):
    kwargs = dict(kwargs)
    route = kwargs.pop("route", "/v1/score")
    r = _post(live_service, route, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field


def test_unknown_route_and_method(live_service):
    assert requests.get(f"{live_service['url']}/v2/nothing", timeout=30).status_code == 404
    auth = {"Authorization": f"Bearer {live_service['token']}"}
    r = requests.get(f"{live_service['url']}/v1/score", headers=auth, timeout=30)
    assert r.status_code == 405 and r.json()["error"]["field"] == "path"


def test_survives_a_bad_input_storm(live_service):
    """300 malformed requests from 8 threads: all 4xx, and the service still scores."""
    bodies = [entry[1] for entry in BAD if "token" not in entry[1]] * 25

    def send(kwargs):
        kwargs = dict(kwargs)
        return _post(live_service, kwargs.pop("route", "/v1/score"), **kwargs).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, bodies[:300]))
    assert all(400 <= c < 500 for c in codes), sorted(set(codes))
    _alive(live_service)
    health = requests.get(f"{live_service['url']}/healthz", timeout=30).json()
    assert json.dumps(health) and health["items_scored"] > 0


def test_serve_reward_stage_detached(live_service, reward_model_dir, tmp_path, capsys):
    """`mmrlhf serve-reward` with Ray already up detaches: app up, URL in the manifest,
    a re-run is a no-op, ``stop_service`` deletes it and marks the manifest stopped."""
    from harness.service import stop_service
    from jobs.serve_reward import main as serve_main
    from mmrlhf_ray.core.stage import StageDir

    run = str(tmp_path / "run")
    args = [
        f"run_dir={run}",
        f"model_path={reward_model_dir}",
        "app_name=job-rm",
        "route_prefix=/job",
        "critique_max_new_tokens=4",
    ]
    try:
        assert serve_main(args) == 0  # detach unset + Ray initialised -> returns
        manifest = StageDir(run, "serve-reward").read_manifest()
        assert manifest["status"] == "done" and manifest["url"].endswith("/job")
        assert requests.get(f"{manifest['url']}/healthz", timeout=30).json()["status"] == "ok"
        r = requests.post(
            f"{manifest['url']}/v1/compare",
            timeout=60,
            json={"question": "q?", "responses": ["a", "b"]},
        )
        assert r.status_code == 200 and len(r.json()["margins"]) == 1
        capsys.readouterr()
        assert serve_main(args) == 0 and "already serving" in capsys.readouterr().out
    finally:
        assert stop_service(run)
    assert StageDir(run, "serve-reward").read_manifest()["status"] == "stopped"
    assert requests.get(f"{manifest['url']}/healthz", timeout=30).status_code == 404
    assert not stop_service(run)  # nothing left to stop
