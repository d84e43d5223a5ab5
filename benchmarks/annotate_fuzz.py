"""Fuzz the annotation app with malformed requests: zero 5xx, alive, labels unchanged.

Starts the real app (``serve/annotate_app.py`` under uvicorn, its own process, SQLite
store) on 127.0.0.1 with six queries, two raters and a lead. Both raters submit labels
for one query each; then a logged-in rater (alice) and anonymous clients send
``--requests`` malformed requests from ``--threads`` threads, drawn from generators of
hostile input: chunked and oversized bodies, rating forms with non-ASCII or malformed
numbers (``²``, ``٣``, ``--5``, 40 digits), NUL bytes, forged CSRF tokens, unassigned and
unknown query ids, a rater on the lead's routes, media indices SQLite cannot hold, junk
and deeply nested draft JSON, stale drafts, login junk (unknown names, long passwords,
multipart), bad cookies, wrong methods and routes, wrong content types, and raw HTTP
(a non-decimal ``Content-Length``, NUL and invalid UTF-8 in the path). Afterwards: the
app answers, and every submitted label (and the history log) is byte-for-byte what it
was. The server's RSS is sampled from ``/proc``.

    .venv/bin/python -m benchmarks.annotate_fuzz                  # 3,000 requests, writes docs
    .venv/bin/python -m benchmarks.annotate_fuzz --requests 300 --no-write
    git archive <commit> | tar -x -C /tmp/base                       # the code before, then:
    .venv/bin/python -m benchmarks.annotate_fuzz --baseline-repo /tmp/base
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]

PASSWORDS = {"alice": "alice-fuzz-pw", "bob": "bob-fuzz-pw", "lead": "lead-fuzz-pw"}
BAD_NUMBERS = ["²", "٣", "５", "Ⅳ", "--5", "-0", "+4", "1e3", "4.0", "0x3", "9" * 40, "", " "]
BAD_IDS = ["q-1", "q-3", "q-nope", "q-\x00", "q-0\x00", "..", "x" * 3000, "é𝄞", "%00", "q-1%2F.."]
MEDIA_IDS = ["q-0", "q-1", "q-nope", "q-\x00"]
# The server process: builds the store (six queries q-0..q-5 with 3 responses and an image
# each; alice, bob, lead; one rater per query: alice q-0, q-2, q-4, bob q-1, q-3, q-5) with
# the Store of the checkout it runs from (--app-repo), then serves it.
SERVER = """
import io, sys, uvicorn
from PIL import Image
from mmrlhf_ray.annotate_app.store import Store
from serve.annotate_app import AppSettings, create_app
db, run_dir, port, passwords = sys.argv[1], sys.argv[2], int(sys.argv[3]), eval(sys.argv[4])
store = Store(db)
tasks, media = [], {}
for i in range(6):
    qid, buf = f"q-{i}", io.BytesIO()
    Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(buf, format="PNG")
    texts = ["A red circle.", "A blue square.", "Nothing."]
    responses = [{"response_id": f"{qid}#r{j}", "model": "m", "text": t}
                 for j, t in enumerate(texts)]
    tasks.append({"query_id": qid, "question": "What is shown?", "responses": responses})
    media[qid] = {"image": buf.getvalue(), "frames": []}
store.add_tasks(tasks, media)
for name, pw in passwords.items():
    store.add_user(name, "lead" if name == "lead" else "rater", pw)
store.assign(1)
settings = AppSettings(run_dir=run_dir, max_body_bytes=1_000_000)
uvicorn.run(create_app(store, settings), host="127.0.0.1", port=port, log_level="critical")
"""


def good_form(csrf: str, revision: str = "0") -> dict[str, str]:
    form = {"csrf": csrf, "revision": revision, "ranking_reason": "the first is right"}
    for i in range(3):
        form.update({f"r{i}_helpfulness": "4", f"r{i}_faithfulness": "4", f"r{i}_ethics": "5"})
        form.update({f"r{i}_rank": str(i + 1), f"r{i}_reason": "fine"})
    return form


def login(url: str, user: str) -> tuple[requests.Session, str]:
    s = requests.Session()
    r = s.post(f"{url}/login", data={"user": user, "password": PASSWORDS[user]}, timeout=60)
    assert r.status_code == 200 and r.url.endswith("/queue"), (user, r.status_code)
    page = s.get(f"{url}/q/q-0" if user != "bob" else f"{url}/q/q-1", timeout=60).text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return s, csrf


def submitted(db: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT query_id, rater, labels, revision, submitted_at FROM assignments "
            "WHERE labels IS NOT NULL ORDER BY query_id"
        ).fetchall()
        history = conn.execute(
            "SELECT id, actor, action, query_id, payload FROM history"
        ).fetchall()
    return rows + history


def raw_http(port: int, data: bytes) -> int:
    """Send raw bytes; the status code of the answer (-1: closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(data)
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                return -1
            head += chunk
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1


def forged(rng: random.Random, csrf: str) -> str:
    return rng.choice(["", "x", csrf[:-1], csrf + "x", "\x00" * 43, "é" * 43, "a" * 5000])


def bad_digit_form(rng: random.Random, csrf: str) -> dict:
    form = good_form(csrf)
    field = rng.choice([f"r{i}_{k}" for i in range(3) for k in ("helpfulness", "ethics", "rank")])
    form[field] = rng.choice(BAD_NUMBERS)
    return form


def chunks(total: int):
    for _ in range(total // (64 << 10) + 1):
        yield b"user=alice&password=" + b"x" * (64 << 10)


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def generators(rng: random.Random, csrf: str) -> list:
    """Functions () -> ("http", method, path, kwargs, as_alice) | ("raw", bytes)."""
    return _rater_cases(rng, csrf) + _body_cases(rng, csrf) + _wire_cases(rng, csrf)


def _rater_cases(rng: random.Random, csrf: str) -> list:
    """The rater's forms, ids, roles, media and drafts."""
    return [
        lambda: ("http", "POST", "/q/q-2", {"data": bad_digit_form(rng, csrf)}, True),
        lambda: (
            "http",
            "POST",
            "/q/q-0",  # alice's submitted query: a stale or malformed revision
            {"data": {**good_form(csrf), "revision": rng.choice(["0", "²", "--1", "", "9" * 30])}},
            True,
        ),
        lambda: ("http", "POST", "/q/q-0", {"data": good_form(forged(rng, csrf), "1")}, True),
        lambda: ("http", "POST", f"/q/{rng.choice(BAD_IDS)}", {"data": good_form(csrf)}, True),
        lambda: (
            "http",
            "POST",
            rng.choice(["/lead/assign", "/lead/export", "/adjudicate/q-0", "/adjudicate/q-1"]),
            {"data": good_form(csrf)},
            True,
        ),
        lambda: (
            "http",
            "GET",
            f"/media/{rng.choice(MEDIA_IDS)}/"
            f"{rng.choice(['image', 'frame', 'x', '..'])}/"
            f"{rng.choice(['0', '-1', '9' * 30, '²', '1e9', '%00', '0x0'])}",
            {},
            True,
        ),
        lambda: (
            "http",
            "POST",
            f"/q/{rng.choice(['q-0', 'q-1', 'q-2', 'q-nope'])}/draft",
            {
                "data": rng.choice(
                    [
                        b"{not json",
                        b"[1, 2, 3]",
                        b'"a string"',
                        nested(rng.choice([50, 5000, 50_000])),
                        json.dumps({f"k{i}": "v" for i in range(300)}).encode(),
                        json.dumps({"r0_ethics": "5", "revision": "0"}).encode(),  # q-0: stale
                        b"\xff\xfe\x00garbage",
                    ]
                ),
                "headers": {
                    "Content-Type": "application/json",
                    "X-CSRF-Token": rng.choice([csrf, forged(rng, csrf)]),
                },
            },
            True,
        ),
    ]


def _body_cases(rng: random.Random, csrf: str) -> list:
    """Oversized and chunked bodies, login junk, bad cookies, wrong methods and routes."""
    return [
        lambda: (
            "http",
            "POST",
            rng.choice(["/login", "/q/q-2", "/logout"]),
            {"data": chunks(rng.choice([1_100_000, 10_000_000])), "headers": FORM},
            rng.random() < 0.5,
        ),
        lambda: ("http", "POST", "/q/q-2", {"data": b"x" * 1_000_001, "headers": FORM}, True),
        lambda: (
            "http",
            "POST",
            "/login",
            {
                "data": rng.choice(
                    [
                        {
                            "user": rng.choice(["alice", "nobody", "\x00", "é" * 70]),
                            "password": "no",
                        },
                        {"user": "lead", "password": "p" * 5000},
                        {"password": "x"},
                        {},
                    ]
                )
            },
            False,
        ),
        lambda: (
            "http",
            "POST",
            "/login",
            {"files": {"f": ("a.bin", b"\0" * 1000)}, "data": {"user": "alice"}},
            False,
        ),
        lambda: (
            "http",
            rng.choice(["GET", "POST"]),
            rng.choice(["/", "/queue", "/q/q-0", "/lead", "/media/q-0/image/0", "/logout"]),
            {"cookies": {"mmrlhf_session": rng.choice(["", "x", "a" * 4000, "\x01\x02"])}},
            False,
        ),
        lambda: (
            "http",
            rng.choice(["PUT", "DELETE", "PATCH", "GET"]),
            rng.choice(
                [
                    "/q/q-2",
                    "/openapi.json",
                    "/docs",
                    "/static/../../etc/passwd",
                    "/nope",
                    "/login/x",
                ]
            ),
            {},
            rng.random() < 0.5,
        ),
    ]


def _wire_cases(rng: random.Random, csrf: str) -> list:
    """Wrong content types and raw HTTP the client library would not send."""
    return [
        lambda: (
            "http",
            "POST",
            "/q/q-2",
            rng.choice(
                [
                    {"json": good_form(csrf)},
                    {"data": b"a=b", "headers": {"Content-Type": "text/plain"}},
                    {"files": {"r0_reason": ("x.txt", b"hi")}, "data": good_form(csrf, "²")},
                    {"data": "&".join(f"f{i}=1" for i in range(5000)), "headers": FORM},
                ]
            ),
            True,
        ),
        lambda: (
            "raw",
            rng.choice(
                [
                    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\nab",
                    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                    b"GET /q/q-\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /q/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /media/q-0/image/%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                ]
            ),
        ),
    ]


def fuzz(url: str, port: int, n: int, threads: int, seed: int, pid: int) -> dict:
    codes: collections.Counter = collections.Counter()
    rss: list[float] = []
    failures: list[str] = []
    lock, counter = threading.Lock(), iter(range(n))
    sessions = [login(url, "alice") for _ in range(threads)]  # before the login junk throttles

    def worker(k: int) -> None:
        rng = random.Random(seed + k)
        alice, csrf = sessions[k]
        anon = requests.Session()
        gens = generators(rng, csrf)
        for i in counter:
            if i % 250 == 0:
                with lock:
                    rss.append(_rss_mb(pid))
            case = rng.choice(gens)()
            if case[0] == "raw":
                code = raw_http(port, case[1])
            else:
                _, method, path, kwargs, as_alice = case
                s = alice if as_alice and "cookies" not in kwargs else anon
                try:
                    r = s.request(method, url + path, timeout=120, allow_redirects=False, **kwargs)
                    code = r.status_code
                except requests.RequestException as exc:  # dropped: count as a failure
                    code = -1 if "Connection" in type(exc).__name__ else -2
            with lock:
                codes[code] += 1
                if (code >= 500 or code < 0) and len(failures) < 20:
                    failures.append(f"{code}: {case!r}"[:400])

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "codes": dict(sorted(codes.items())),
        "wall_s": time.perf_counter() - t0,
        "rss": rss,
        "failures": failures,
        "alice": sessions[0],
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_app(app_repo: str, args) -> dict:
    """Serve the app of ``app_repo`` in its own process, fuzz it, check it afterwards."""
    tmp = tempfile.mkdtemp(prefix="annotatefuzz-")
    db = f"{tmp}/annotations.sqlite"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": app_repo}
    cmd = [sys.executable, "-c", SERVER, db, tmp, str(port), repr(PASSWORDS)]
    proc = subprocess.Popen(cmd, cwd=app_repo, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        for user, qid in (("alice", "q-0"), ("bob", "q-1")):
            s, csrf = login(url, user)
            r = s.post(f"{url}/q/{qid}", data=good_form(csrf), allow_redirects=False, timeout=60)
            assert r.status_code == 303, (user, r.status_code)
        before = submitted(db)
        res = fuzz(url, port, args.requests, args.threads, args.seed, proc.pid)
        alice, _ = res.pop("alice")
        res["alive"] = (
            proc.poll() is None
            and requests.get(f"{url}/healthz", timeout=60).status_code == 200
            and alice.get(f"{url}/queue", timeout=60).status_code == 200
        )
        after = submitted(db)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    res["n_labels"], res["unchanged"] = len(before), before == after
    res["changed"] = [str(row)[:300] for row in sorted(set(after) ^ set(before), key=str)]
    return res


def _facts(res: dict) -> list[str]:
    n5 = sum(v for k, v in res["codes"].items() if k >= 500 or k < 0)
    rss = res["rss"]
    return [
        f"5xx or dropped connections: **{n5}** (target 0: {'met' if n5 == 0 else 'NOT met'})",
        f"alive afterwards (`/healthz`, the rater's queue page): {'yes' if res['alive'] else 'NO'}",
        f"submitted labels and history ({res['n_labels']} rows) byte-for-byte unchanged: "
        f"{'yes' if res['unchanged'] else 'NO'}",
        f"server RSS: min {min(rss):.0f} / max {max(rss):.0f} MB over {len(rss)} samples",
        f"{sum(res['codes'].values())} requests in {res['wall_s']:.0f} s",
    ]


def report(args, res: dict, base: dict | None) -> str:
    cmd = "`.venv/bin/python -m benchmarks.annotate_fuzz" + (
        f" --requests {args.requests}" if args.requests != 3000 else ""
    )
    cmd += " --baseline-repo <checkout of the commit before>`" if base else "`"
    codes = sorted(set(res["codes"]) | set((base or {}).get("codes", {})))
    lines = [
        cmd,
        "",
        f"{args.requests} malformed requests from {args.threads} threads (seed {args.seed}) "
        "against the app under uvicorn on 127.0.0.1 (its own process), from a logged-in "
        "rater's session and anonymous ones; the same requests against the code before "
        "issue 21 (baseline) in the same run.",
        "",
        "| status | this branch | baseline |" if base else "| status | count |",
        "|---|---|---|" if base else "|---|---|",
    ]
    for k in codes:
        row = f"| {k} | {res['codes'].get(k, 0)} |"
        lines.append(row + (f" {base['codes'].get(k, 0)} |" if base else ""))
    lines += ["", *[f"- this branch: {f}" for f in _facts(res)]]
    if base:
        lines += [f"- baseline: {f}" for f in _facts(base)]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace (or add) ``## Annotation app (issue 21)`` in docs/BENCHMARKS.md."""
    path = REPO / "docs" / "BENCHMARKS.md"
    doc = path.read_text()
    title = "## Annotation app (issue 21)"
    legend = (
        "Reading the table: 200 are drafts autosaved for the rater's own queries (valid JSON) "
        "and pages; 303 anonymous GETs sent to `/login`; 401 anonymous POSTs (the session is "
        "checked before a body is parsed); 415 bodies that are not a plain form; 429 logins "
        "refused by the throttle once an address has failed 20 times in a minute; -1 a "
        "connection closed without an answer."
    )
    block = f"{title}\n\n### Fuzz: malformed requests\n\n{text.strip()}\n\n{legend}\n"
    start = doc.find(title)
    if start < 0:
        doc = doc.rstrip() + "\n\n" + block
    else:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start] + block + ("" if end < 0 else doc[end:])
    path.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--baseline-repo",
        default="",
        help="also fuzz the app of this checkout (e.g. `git archive` of an older commit)",
    )
    args = parser.parse_args()
    base = run_app(args.baseline_repo, args) if args.baseline_repo else None
    res = run_app(str(REPO), args)
    text = report(args, res, base)
    print(text)
    for name, r in (("this branch", res), ("baseline", base or {})):
        for line in r.get("failures", []):  # what a 5xx answered, to fix it
            print(f"{name}: 5xx/dropped: {line}", file=sys.stderr)
        for line in r.get("changed", [])[:5]:
            print(f"{name}: changed: {line}", file=sys.stderr)
    if not args.no_write:
        write_section(text)
    return 0 if sum(v for k, v in res["codes"].items() if k >= 500 or k < 0) == 0 else 1


if __name__ == "__main__":
    from mmrlhf_ray.core.signals import run_main

    run_main(main, "annotate_fuzz")
