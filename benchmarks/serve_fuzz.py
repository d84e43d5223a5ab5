"""Fuzz the reward service with malformed requests: zero 5xx, alive, memory flat.

Starts the reward app (tiny Qwen2-VL critique reward model, bearer token on, an
allowed media root) on 127.0.0.1 and sends ``--requests`` malformed requests from
``--threads`` threads, drawn from generators of client mistakes: truncated / random /
non-UTF-8 / deeply nested JSON, wrong types, unknown fields, missing fields, oversize
text, too many items or responses, bad base64, corrupt images, pixel bombs, paths out
of the allowed roots, URLs, bodies over the cap, missing or wrong tokens, wrong
methods and routes. Every 500th request is a valid one (must be scored: 200). The
replica's RSS (``/healthz``) is sampled through the run; "flat" = the last quarter's
RSS within ``--rss-slack-mb`` of the first quarter's.

    .venv/bin/python -m benchmarks.serve_fuzz                 # 10,000 requests, writes docs
    .venv/bin/python -m benchmarks.serve_fuzz --requests 500 --no-write
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import requests

from benchmarks.serve_load import build_reward_model, free_port, write_subsection

TOKEN = "fuzz-token"


def _png(size=(32, 32)) -> bytes:
    from PIL import Image

    from mmrlhf_ray.data.media import encode_png

    return encode_png(Image.new("RGB", size, (10, 200, 30)))


def _bomb(w: int, h: int) -> bytes:
    import zlib

    raw = _png((1, 1))
    ihdr = bytearray(raw[16:29])
    ihdr[0:4], ihdr[4:8] = w.to_bytes(4, "big"), h.to_bytes(4, "big")
    return raw[:16] + bytes(ihdr) + zlib.crc32(b"IHDR" + bytes(ihdr)).to_bytes(4, "big") + raw[33:]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def generators(rng: random.Random) -> list:
    """Functions rng -> (method, route, body bytes | json, headers) of one client mistake."""
    png = b64(_png())
    item = {"question": "What colour?", "response": "Green.", "image": png}

    def junk_text(n):
        return "".join(rng.choice('ab{}[]":,\\\x00é𝄞 ') for _ in range(n))

    def mutate(obj):  # one field made invalid (never accidentally valid)
        obj = dict(obj)
        key = rng.choice(["question", "response", "image", "critique"])
        bad = [None, 1, -1e308, True, [], {}, [1, 2], "x" * 9000]
        if key in ("image", "critique"):
            bad = [1, True, [], {}, [1, 2]] + ([junk_text(20)] if key == "image" else [])
        obj[key] = rng.choice(bad)
        return obj

    return [
        lambda: ("POST", "/v1/score", b'{"items": [' + junk_text(rng.randint(0, 50)).encode(), {}),
        lambda: (
            "POST",
            "/v1/score",
            bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))),
            {},
        ),
        lambda: ("POST", "/v1/compare", b"[" * 5000 + b"]" * 5000, {}),
        lambda: ("POST", "/v1/score", {"items": [mutate(item)]}, {}),
        lambda: ("POST", "/v1/score", {"items": [dict(item, surprise=1)]}, {}),
        lambda: ("POST", "/v1/score", {"items": [{"question": "q"}]}, {}),
        lambda: ("POST", "/v1/score", {"items": [item] * 65}, {}),
        lambda: (
            "POST",
            "/v1/compare",
            {"question": "q", "responses": ["a"] * rng.randint(17, 40)},
            {},
        ),
        lambda: (
            "POST",
            "/v1/compare",
            {"question": "q", "responses": ["a", "b"], "critiques": ["x"]},
            {},
        ),
        lambda: ("POST", "/v1/score", {"items": [dict(item, image=junk_text(40))]}, {}),
        lambda: ("POST", "/v1/score", {"items": [dict(item, image=b64(os.urandom(200)))]}, {}),
        lambda: (
            "POST",
            "/v1/score",
            {"items": [dict(item, image=b64(_bomb(rng.randint(3000, 90000), 60000)))]},
            {},
        ),
        lambda: (
            "POST",
            "/v1/score",
            {
                "items": [
                    dict(
                        item,
                        image=None,
                        image_path=rng.choice(
                            ["../../etc/passwd", "/etc/shadow", "link.png", "nope.png", "a/../../x"]
                        ),
                    )
                ]
            },
            {},
        ),
        lambda: (
            "POST",
            "/v1/score",
            {"items": [dict(item, image=None, image_url="http://169.254.169.254/latest")]},
            {},
        ),
        lambda: (
            "POST",
            "/v1/score",
            {"items": [dict(item, image=None, video_frames=[png] * rng.randint(9, 30))]},
            {},
        ),
        lambda: ("POST", "/v1/score", b"x" * rng.randint(9 << 20, 10 << 20), {}),
        lambda: (
            "POST",
            "/v1/score",
            {"items": [item]},
            {
                "Authorization": rng.choice(
                    ["", "Bearer", "Bearer wrong", "Basic Zm9v", "bearer " + TOKEN + "x"]
                )
            },
        ),
        lambda: (rng.choice(["GET", "PUT", "DELETE"]), "/v1/score", None, {}),
        lambda: ("GET", "/" + junk_text(10).replace("\x00", ""), None, {}),
        lambda: (
            "POST",
            "/v1/score",
            {"items": "all of them"},
            {"Content-Type": rng.choice(["text/plain", "application/xml", "multipart/form-data"])},
        ),
    ]


def send(session, url, method, route, body, headers) -> int:
    hdrs = {"Authorization": f"Bearer {TOKEN}"}
    hdrs.update(headers)
    if hdrs.get("Authorization") == "":
        del hdrs["Authorization"]
    kw = {"json": body} if isinstance(body, (dict, list)) else {"data": body}
    if "Content-Type" not in hdrs and not isinstance(body, (dict, list)):
        hdrs["Content-Type"] = "application/json"
    try:
        return session.request(method, f"{url}{route}", headers=hdrs, timeout=120, **kw).status_code
    except requests.RequestException as exc:  # the server dropped us: count as a failure
        return -1 if "Connection" in type(exc).__name__ else -2


def fuzz(url: str, n: int, threads: int, seed: int) -> dict:
    codes: collections.Counter = collections.Counter()
    valid_ok, rss = [], []
    lock, counter = threading.Lock(), iter(range(n))
    valid = {"items": [{"question": "What colour?", "response": "Green.", "image": b64(_png())}]}

    def worker(k: int) -> None:
        rng, session = random.Random(seed + k), requests.Session()
        gens = generators(rng)
        for i in counter:
            if i % 500 == 0:
                ok = send(session, url, "POST", "/v1/score", valid, {}) == 200
                health = session.get(f"{url}/healthz", timeout=60).json()
                with lock:
                    valid_ok.append(ok)
                    rss.append((i, health["rss_mb"]))
            code = send(session, url, *rng.choice(gens)())
            with lock:
                codes[code] += 1

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "codes": dict(sorted(codes.items())),
        "wall_s": time.perf_counter() - t0,
        "valid_ok": valid_ok,
        "rss": sorted(rss),
    }


def report(args, res: dict, alive: bool) -> str:
    codes = res["codes"]
    n5 = sum(v for k, v in codes.items() if k >= 500 or k < 0)
    n = sum(codes.values())
    rss = [r for _, r in res["rss"]]
    q = max(1, len(rss) // 4)
    first, last = sum(rss[:q]) / q, sum(rss[-q:]) / q
    flat = last - first <= args.rss_slack_mb
    cmd = "`.venv/bin/python -m benchmarks.serve_fuzz" + (
        f" --requests {args.requests}`" if args.requests != 10000 else "`"
    )
    return "\n".join(
        [
            cmd,
            "",
            f"{n} malformed requests ({args.threads} threads, {res['wall_s']:.0f} s, "
            f"{n / res['wall_s']:.0f} req/s), plus {len(res['valid_ok'])} valid ones interleaved.",
            "",
            "| status | count |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in codes.items()],
            "",
            f"- 5xx or dropped connections: **{n5}** (target 0: {'met' if n5 == 0 else 'NOT met'})",
            f"- valid requests scored during the storm: {sum(res['valid_ok'])}/{len(res['valid_ok'])}; "
            f"alive afterwards (healthz + a valid score): {'yes' if alive else 'NO'}",
            f"- replica RSS: first quarter {first:.0f} MB, last quarter {last:.0f} MB, "
            f"min {min(rss):.0f} / max {max(rss):.0f} MB over {len(rss)} samples "
            f"({'flat' if flat else 'GROWING'}, slack {args.rss_slack_mb} MB)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rss-slack-mb", type=float, default=30.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from ray import serve

    from harness.runtime import init_ray
    from mmrlhf_ray.service.config import ServeLimits, ServeRewardConfig
    from serve.app import start

    init_ray(num_cpus=4)
    tmp = tempfile.mkdtemp(prefix="servefuzz-")
    root = Path(tmp, "media")
    root.mkdir()
    (root / "ok.png").write_bytes(_png())
    (root / "link.png").symlink_to("/etc/hostname")
    cfg = ServeRewardConfig(
        model_path=build_reward_model(tmp),
        port=free_port(),
        app_name="fuzz",
        critique_max_new_tokens=4,
        access_log=False,
        limits=ServeLimits(allowed_roots=[str(root)]),
    )
    url = start(cfg, token=TOKEN)
    res = fuzz(url, args.requests, args.threads, args.seed)
    session = requests.Session()
    alive = (
        session.get(f"{url}/healthz", timeout=60).status_code == 200
        and send(
            session, url, "POST", "/v1/score", {"items": [{"question": "q", "response": "a"}]}, {}
        )
        == 200
    )
    serve.delete("fuzz")
    text = report(args, res, alive)
    print(json.dumps(res["codes"]), "\n" + text)
    if not args.no_write:
        write_subsection("Fuzz: malformed requests", text)


if __name__ == "__main__":
    from mmrlhf_ray.core.signals import run_main

    run_main(main, "serve_fuzz")  # Ctrl-C 130, SIGTERM 143, the services it started stopped
