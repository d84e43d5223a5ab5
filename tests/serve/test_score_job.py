"""`mmrlhf score` against the live service: every pair gets δ, retries, quarantine, resume."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from jobs.score import main as score_main
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.service.client import ScoringFailed
from tests.serve.helpers import TOKEN, all_pairs, b64, free_port, png_bytes

pytestmark = pytest.mark.ray


class FlakyProxy:
    """A real HTTP hop in front of the service answering 503 to the first ``fail_first``
    POSTs (as an overloaded or restarting service would), forwarding the rest."""

    def __init__(self, target: str, fail_first: int):
        self.target, self.fail_left, self.posts, self.lock = target, fail_first, 0, threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.posts += 1
                    fail = proxy.fail_left > 0
                    proxy.fail_left -= fail
                if fail:
                    status, payload = 503, b'{"error": {"field": "", "reason": "overloaded"}}'
                else:
                    hdrs = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("authorization", "content-type")
                    }
                    resp = requests.post(
                        proxy.target + self.path, data=body, headers=hdrs, timeout=60
                    )
                    status, payload = resp.status_code, resp.content
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _pairs_run(tmp_path) -> tuple[str, int]:
    """A run dir whose finished `pairs` stage has 3 scorable queries (3+1+3 pairs), one
    query with an undecodable image (1 pair) and one invalid row."""
    img = png_bytes((0, 255, 0))
    rows = all_pairs("q1", 3, image=img) + all_pairs("q2", 2) + all_pairs("q4", 3, image=img)
    rows += all_pairs("q3", 2, image=b"not an image")
    rows += [dict(all_pairs("q5", 2)[0], chosen="")]
    run = str(tmp_path / "run")
    pairs = StageDir(run, "pairs")
    pairs.begin({})
    pairs.write_part("part-00000", to_table(rows, "pair"))
    pairs.finish(len(rows), len(rows), 0)
    return run, len(rows)


def _args(run, url, *extra):
    return [
        f"run_dir={run}",
        f"url={url}",
        "token_env=MMRLHF_TEST_RM_TOKEN",
        "queries_per_part=2",
        "concurrency=2",
        "retry.base_delay_s=0.01",
        "retry.jitter=0",
        *extra,
    ]


def test_score_writes_every_margin_with_retries_and_resumes(live_service, tmp_path, monkeypatch):
    monkeypatch.setenv("MMRLHF_TEST_RM_TOKEN", TOKEN)
    run, n_rows = _pairs_run(tmp_path)
    proxy = FlakyProxy(live_service["url"], fail_first=2)
    try:
        assert score_main(_args(run, proxy.url)) == 0
        assert proxy.fail_left == 0 and proxy.posts == 4 + 2  # 4 queries, 2 retried 503s
        out = StageDir(run, "score")
        manifest = out.read_manifest()
        assert manifest["status"] == "done"
        assert manifest["counts"] == {"in": n_rows, "out": 7, "quarantined": 2}
        scored = {r["pair_id"]: r for r in out.read().to_pylist()}
        assert {r["margin_source"] for r in scored.values()} == {"reward-service"}
        # δ = r(chosen) - r(rejected) exactly as the service scores the query's responses
        direct = requests.post(
            f"{live_service['url']}/v1/compare",
            json={
                "question": "question of q1",
                "image": b64(png_bytes((0, 255, 0))),
                "responses": ["answer r0", "answer r1", "answer r2"],
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ).json()["scores"]
        for i, j in [(0, 1), (0, 2), (1, 2)]:
            got = scored[f"q1:r{i}>r{j}"]["margin"]
            assert got == pytest.approx(direct[i] - direct[j], abs=1e-4)
        bad = {r["field"] for r in out.read(quarantine=True).to_pylist()}
        assert bad == {"image", "chosen"}
        # resume: lose one part, re-run: only its 2 queries are sent again
        out.fs.delete_file(f"{out.data_dir}/part-00001.parquet")
        manifest["status"] = "running"
        out.write_manifest(manifest)
        before = proxy.posts
        assert score_main(_args(run, proxy.url)) == 0
        assert proxy.posts - before == 2 and out.count_rows() == 7
        assert score_main(_args(run, proxy.url)) == 0 and proxy.posts - before == 2  # done: no-op
    finally:
        proxy.close()


def test_score_fails_loudly_when_the_service_stays_down(live_service, tmp_path, monkeypatch):
    monkeypatch.setenv("MMRLHF_TEST_RM_TOKEN", TOKEN)
    run, _ = _pairs_run(tmp_path)
    proxy = FlakyProxy(live_service["url"], fail_first=10**6)
    try:
        with pytest.raises(ScoringFailed, match="gave up after 3 attempts"):
            score_main(_args(run, proxy.url, "retry.max_attempts=3"))
        out = StageDir(run, "score")
        assert out.read_manifest()["status"] == "running" and out.part_names() == []
    finally:
        proxy.close()


def test_score_via_serve_handle(live_service, tmp_path):
    run, n_rows = _pairs_run(tmp_path)
    app = live_service["cfg"].app_name
    assert score_main([f"run_dir={run}", "via=handle", f"app_name={app}"]) == 0
    counts = StageDir(run, "score").read_manifest()["counts"]
    assert counts == {"in": n_rows, "out": 7, "quarantined": 2}
