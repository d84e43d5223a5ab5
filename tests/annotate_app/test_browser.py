"""A real browser (headless Debian Chromium driven by Playwright) against the app served
by `jobs/annotate_app.py` in a subprocess on a free 127.0.0.1 port.

Two raters score and rank a query with an image and one with a video using the keyboard;
the lead assigns, watches agreement (checked against hand-computed values), adjudicates
the disagreement; the server is killed and restarted mid-way and nothing is lost; the
export goes through the real `pairs` stage to exactly the expected pairs.

Set MMRLHF_DOC_SCREENSHOTS=docs/img to refresh the screenshots in the guide.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import httpx
import pytest

from jobs.annotate_app import main as app_main
from jobs.pairs import main as pairs_main
from mmrlhf_ray.core.stage import StageDir
from tests.annotate_app.helpers import PASSWORDS, make_run

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin")


class Server:
    """`mmrlhf annotate-app` as a subprocess; stopped by its PID."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = open(f"{self.run_dir}/server.log", "a")  # closed by kill() / stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "jobs/annotate_app.py"),
                f"run_dir={self.run_dir}",
                f"port={self.port}",
                "raters_per_query=2",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the condition, not a fixed time
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"server exited: {open(self.log.name).read()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("server did not answer /healthz")

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown handlers."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, monkeypatch_module):
    run_dir = make_run(str(tmp_path_factory.mktemp("browser") / "run"))
    for user, role in (("alice", "rater"), ("bob", "rater"), ("lead", "lead")):
        monkeypatch_module.setenv("MMRLHF_PASSWORD", PASSWORDS[user])
        assert (
            app_main([f"run_dir={run_dir}", "action=add-user", f"user={user}", f"role={role}"]) == 0
        )
    srv = Server(run_dir)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def login(browser, server, user):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.fill("#user", user)
    page.fill("#password", PASSWORDS[user])
    with page.expect_navigation():
        page.click("#login")
    return page


def rate_with_keys(page, rows, ranking_reason):
    """rows: per response (helpfulness, faithfulness, ethics, rank, reason), typed."""
    for h, f, e, rank, reason in rows:
        for digit in (h, f, e, rank):
            page.keyboard.press(str(digit))
        page.keyboard.type(reason)
        page.keyboard.press("Tab")
    page.keyboard.type(ranking_reason)
    page.keyboard.press("Escape")


def submit(page, query_id):
    with (
        page.expect_navigation(),
        page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith(f"/q/{query_id}")
        ) as response,
    ):
        page.keyboard.press("Control+Enter")
    return response.value.status


ALICE = {
    "q-image": [
        (5, 5, 5, 1, "red, correct"),
        (2, 1, 5, 2, "wrong colour"),
        (1, 1, 3, 3, "denies the circle"),
    ],
    "q-video": [
        (4, 4, 5, 1, "right direction"),
        (2, 2, 5, 2, "wrong direction"),
        (1, 1, 4, 3, "says static"),
    ],
}
BOB = {
    "q-image": [
        (5, 4, 5, 1, "correct"),
        (2, 2, 5, 2, "blue is wrong"),
        (1, 1, 4, 2, "no circle is wrong"),
    ],
    "q-video": [(5, 5, 5, 1, "correct"), (2, 2, 5, 2, "up is wrong"), (1, 1, 5, 3, "it moves")],
}


def alpha_interval(units):
    """Hand formula with exact fractions (the test's own arithmetic, not the app's code)."""
    values = [v for u in units for v in u]
    n = len(values)
    d_o = sum(Fraction((a - b) ** 2) for u in units for a in u for b in u) / n
    d_e = Fraction(sum((a - b) ** 2 for a in values for b in values), n * (n - 1))
    return 1 - d_o / d_e


def test_team_round_trip(server, browser):
    lead = login(browser, server, "lead")
    lead.click("#assign")
    assert lead.text_content("#notice") == "assigned 6 new rater-query pairs"

    # ---- alice: image query by keyboard, zoom; a bad submit first -------------------
    alice = login(browser, server, "alice")
    with alice.expect_navigation():
        alice.click("#start")
    assert alice.url.endswith("/q/q-image")
    alice.keyboard.press("z")
    assert "zoomed" in alice.get_attribute("#media", "class")
    alice.keyboard.press("z")
    assert submit(alice, "q-image") == 422  # nothing filled in yet
    assert "response 1 helpfulness is missing" in alice.text_content("#errors")
    rate_with_keys(alice, ALICE["q-image"], "only the first names the colour")
    if os.environ.get("MMRLHF_DOC_SCREENSHOTS"):
        alice.screenshot(
            path=f"{os.environ['MMRLHF_DOC_SCREENSHOTS']}/annotate-rater.png", full_page=True
        )
    assert submit(alice, "q-image") == 303
    assert alice.url.endswith("/q/q-third")  # the next query to do

    # ---- the video query: n to go on, frames step and play, draft autosave ----------
    with alice.expect_navigation():
        alice.keyboard.press("n")
    assert alice.url.endswith("/q/q-video") and alice.is_visible("#frame")
    alice.keyboard.press(".")
    assert alice.text_content("#frame-label") == "frame 2 / 3"
    alice.keyboard.press(" ")
    assert alice.text_content("#play") == "pause"
    alice.keyboard.press(" ")
    assert alice.text_content("#play") == "play"
    with alice.expect_response(
        lambda r: r.url.endswith("/draft") and '"r0_ethics":"5"' in (r.request.post_data or "")
    ):
        for digit in "445":
            alice.keyboard.press(digit)
    alice.reload()
    assert alice.is_checked('input[name="r0_ethics"][value="5"]')  # the draft came back
    for _ in range(3):  # to the rank: the scores are already drafted
        alice.keyboard.press("ArrowDown")
    alice.keyboard.press("1")
    alice.keyboard.type(ALICE["q-video"][0][4])
    alice.keyboard.press("Tab")
    rate_with_keys(alice, ALICE["q-video"][1:], "the first sees the motion")
    assert submit(alice, "q-video") == 303

    # ---- bob: the same two queries ----------------------------------------------------
    bob = login(browser, server, "bob")
    bob.goto(f"{server.url}/q/q-image")
    rate_with_keys(bob, BOB["q-image"], "blue and none are both wrong")
    assert submit(bob, "q-image") == 303
    bob.goto(f"{server.url}/q/q-video")
    rate_with_keys(bob, BOB["q-video"], "right, then up, then static")
    if os.environ.get("MMRLHF_DOC_SCREENSHOTS"):
        bob.screenshot(
            path=f"{os.environ['MMRLHF_DOC_SCREENSHOTS']}/annotate-rater.png", full_page=True
        )
    assert submit(bob, "q-video") == 303
    bob.goto(f"{server.url}/q/q-image")  # a tab left open on the disputed query

    # ---- both raters submit q-third at the same moment, over HTTP ---------------------
    concurrent_submits(server)

    # ---- a crash and a restart lose nothing ------------------------------------------
    server.kill()
    server.start()

    # ---- the lead: agreement equals the hand-computed values; adjudicate --------------
    lead.goto(f"{server.url}/lead")
    assert lead.text_content("#count-disputed") == "1" and lead.text_content("#count-agreed") == "2"
    for i, dim in enumerate(("helpfulness", "faithfulness", "ethics")):
        units = [(ALICE[q][r][i], BOB[q][r][i]) for q in ("q-image", "q-video") for r in range(3)]
        units += [(THIRD[r][i], THIRD[r][i]) for r in range(2)]
        assert lead.text_content(f"#alpha-{dim}") == f"{float(alpha_interval(units)):.4f}"
    # helpfulness by hand: 16 values, one unit (4,5) differs: D_o = 2/16; sum 43, sum of
    # squares 151, ordered-pair sum 2*16*(151 - 43^2/16) = 1134, D_e = 1134/240;
    # alpha = 1 - (1/8) / (1134/240) = 184/189
    assert lead.text_content("#alpha-helpfulness") == f"{184 / 189:.4f}"
    # tau-b: q-image 1,2,3 vs 1,2,2 -> 2/sqrt(6); q-video and q-third identical -> 1
    assert lead.text_content("#tau-q-image") == "0.8165"
    assert lead.text_content("#mean-tau") == f"{(2 / 6**0.5 + 2) / 3:.4f}"
    with lead.expect_navigation():
        lead.click("#adjudicate-q-image")
    assert "rankings differ" in lead.text_content("#reasons")
    if os.environ.get("MMRLHF_DOC_SCREENSHOTS"):
        lead.screenshot(
            path=f"{os.environ['MMRLHF_DOC_SCREENSHOTS']}/annotate-adjudicate.png", full_page=True
        )
    # prefilled with alice's labels: the lead ties responses 2 and 3 (rank of response 3)
    for _ in range(5 + 5 + 3):  # 5 cells per response: to response 3's rank
        lead.keyboard.press("ArrowDown")
    lead.keyboard.press("2")
    with lead.expect_navigation():
        lead.keyboard.press("Control+Enter")
    assert lead.url.endswith("/lead") and lead.text_content("#count-adjudicated") == "1"

    # ---- bob's stale tab: refused with a message, nothing written --------------------
    bob.keyboard.press("ArrowDown")
    bob.keyboard.press("3")  # change a score, then submit the old page
    assert submit(bob, "q-image") == 409
    assert "adjudicated by lead" in bob.text_content("#errors")

    # ---- export -> pairs ---------------------------------------------------------------
    lead.click("#export")
    assert lead.text_content("#notice").startswith("exported 3 records")
    if os.environ.get("MMRLHF_DOC_SCREENSHOTS"):
        lead.screenshot(
            path=f"{os.environ['MMRLHF_DOC_SCREENSHOTS']}/annotate-lead.png", full_page=True
        )
    assert pairs_main([f"run_dir={server.run_dir}"]) == 0
    pairs = (
        StageDir(server.run_dir, "pairs").read(columns=["pair_id"]).column("pair_id").to_pylist()
    )
    assert sorted(pairs) == [
        "q-image::q-image/m0/0>q-image/m1/0",
        "q-image::q-image/m0/0>q-image/m2/0",
        "q-third::q-third/m0/0>q-third/m1/0",
        "q-video::q-video/m0/0>q-video/m1/0",
        "q-video::q-video/m0/0>q-video/m2/0",
        "q-video::q-video/m1/0>q-video/m2/0",
    ]


THIRD = [(4, 4, 5, 1, "two is right"), (2, 2, 5, 2, "three is wrong")]


def concurrent_submits(server):
    """alice and bob post q-third at once (two threads released by one barrier)."""
    clients = {}
    for user in ("alice", "bob"):
        c = httpx.Client(base_url=server.url)
        assert c.post("/login", data={"user": user, "password": PASSWORDS[user]}).status_code == 303
        html = c.get("/q/q-third").text
        csrf = re.search(r'name="csrf" value="([^"]*)"', html).group(1)
        clients[user] = (c, csrf)
    barrier, statuses = threading.Barrier(2), {}

    def post(user):
        c, csrf = clients[user]
        form = {"csrf": csrf, "revision": "0", "ranking_reason": "count"}
        for i, (h, f, e, rank, reason) in enumerate(THIRD):
            form.update(
                {
                    f"r{i}_helpfulness": h,
                    f"r{i}_faithfulness": f,
                    f"r{i}_ethics": e,
                    f"r{i}_rank": rank,
                    f"r{i}_reason": reason,
                }
            )
        barrier.wait()
        statuses[user] = c.post("/q/q-third", data=form).status_code

    threads = [threading.Thread(target=post, args=(u,)) for u in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c, _ in clients.values():
        c.close()
    assert statuses == {"alice": 303, "bob": 303}
