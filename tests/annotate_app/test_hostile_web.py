"""Hostile input on the annotation app (issue 21, item 2): bodies counted in bytes, the
session before any parsing, throttled logins, password resets that end sessions, idle
sessions, media only for assigned raters, one 404, ASCII-only numbers, drafts that
cannot outlive a submit, security headers. The clock is a fake one: nothing sleeps."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from jobs.annotate_app import add_user
from mmrlhf_ray.annotate_app.config import AnnotateAppConfig
from mmrlhf_ray.annotate_app.store import IDLE_SECONDS, Store
from mmrlhf_ray.annotate_app.tasks import load_tasks
from mmrlhf_ray.annotate_app.throttle import LoginThrottle
from serve.annotate_app import NOT_FOUND, AppSettings, create_app
from tests.annotate_app.helpers import PASSWORDS, add_team
from tests.annotate_app.test_web import good_form, messages, page_token


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(run_dir):
    """Three queries, one rater each (alice: q-image, q-video; bob: q-third), a lead; a
    fake clock; a login throttle of 5 tries per name and 8 per address a minute."""
    clock = FakeClock()
    store = Store(f"{run_dir}/annotate-app/annotations.sqlite", clock=clock)
    store.add_tasks(*load_tasks(run_dir, "generate")[:2])  # (tasks, media)
    add_team(store)
    store.assign(1)
    throttle = LoginThrottle(per_user=5, per_address=8, clock=clock)
    app = create_app(store, AppSettings(run_dir=run_dir, max_body_bytes=20_000), throttle)
    return store, app, clock


def login(app, user, password=None):
    c = TestClient(app)
    r = c.post("/login", data={"user": user, "password": password or PASSWORDS[user]})
    return c, r


def test_assignment_of_the_fixture(env):
    store, _, _ = env
    assert [r["query_id"] for r in store.queue("alice")] == ["q-image", "q-video"]
    assert [r["query_id"] for r in store.queue("bob")] == ["q-third"]
    assert LoginThrottle().per_user == 5 and LoginThrottle().per_address == 20  # defaults


def test_a_10_mb_chunked_body_to_login_is_refused(env):
    _, app, _ = env
    sent = []

    def chunks():  # no Content-Length: the old guard let this through to the form parser
        for _ in range(160):
            sent.append(1)
            yield b"user=alice&password=" + b"x" * (64 << 10)

    r = TestClient(app).post(
        "/login", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413 and "over 20000 bytes" in r.text
    r = TestClient(app).post("/login", content=b"x", headers={"Content-Length": "²".encode()})
    assert r.status_code == 400


def test_the_session_is_checked_before_the_body_is_parsed(env):
    _, app, _ = env
    body = b"--b\r\nContent-Disposition: form-data; name=f; filename=x\r\n\r\nxx\r\n--b--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    anon = TestClient(app)
    assert anon.post("/q/q-image", content=body, headers=headers).status_code == 401
    alice, _ = login(app, "alice")
    r = alice.post("/q/q-image", content=body, headers=headers)  # logged in: parsed, refused
    assert r.status_code == 415


def test_the_sixth_wrong_password_within_a_minute_is_throttled(env):
    _, app, clock = env
    for _ in range(5):
        assert login(app, "alice", "wrong")[1].status_code == 401
        clock.now += 5
    _, r = login(app, "alice")  # even the right password: not checked
    assert r.status_code == 429 and "too many wrong passwords" in r.text
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert login(app, "bob")[1].url.path == "/queue"  # another name is not locked out
    clock.now += 60
    _, r = login(app, "alice")
    assert r.status_code == 200 and r.url.path == "/queue"


def test_one_address_guessing_many_names_is_throttled(env):
    _, app, _ = env
    for i in range(8):
        assert login(app, f"nobody{i}", "wrong")[1].status_code == 401  # unknown: same answer
    assert login(app, "lead")[1].status_code == 429


def test_a_reset_password_ends_the_old_sessions(env, monkeypatch):
    store, app, _ = env
    alice, _ = login(app, "alice")
    assert alice.get("/queue").status_code == 200
    cfg = AnnotateAppConfig(run_dir="unused", action="add-user", user="alice")
    monkeypatch.setenv(cfg.password_env, "new-alice-pw")
    with pytest.raises(ValueError, match="exists"):
        add_user(cfg, store)  # no silent reset
    assert alice.get("/queue").status_code == 200 and store.sessions_of("alice") == 1
    add_user(AnnotateAppConfig(run_dir="unused", user="alice", replace=True), store)
    assert store.sessions_of("alice") == 0
    assert alice.get("/queue", follow_redirects=False).status_code == 303  # to /login
    assert login(app, "alice")[1].status_code == 401
    assert login(app, "alice", "new-alice-pw")[1].url.path == "/queue"


def test_idle_sessions_end_and_are_purged(env):
    store, app, clock = env
    alice, _ = login(app, "alice")
    clock.now += IDLE_SECONDS - 10
    assert alice.get("/queue").status_code == 200  # a use extends it
    clock.now += IDLE_SECONDS - 10
    assert alice.get("/queue").status_code == 200
    clock.now += IDLE_SECONDS + 1
    assert alice.get("/queue", follow_redirects=False).status_code == 303
    assert store.sessions_of("alice") == 1
    login(app, "bob")  # every login purges the expired
    assert store.sessions_of("alice") == 0


def test_media_only_for_assigned_raters_and_leads_with_one_404(env):
    _, app, _ = env
    (alice, _), (bob, _), (lead, _) = login(app, "alice"), login(app, "bob"), login(app, "lead")
    assert alice.get("/media/q-image/image/0").content.startswith(b"\x89PNG")
    assert lead.get("/media/q-video/frame/1").content.startswith(b"\x89PNG")
    answers = [
        bob.get("/media/q-image/image/0"),  # exists, not bob's
        bob.get("/media/q-nope/image/0"),  # does not exist
        alice.get("/media/q-image/image/" + "9" * 30),  # an index SQLite cannot hold
        alice.get("/media/q-image/frame/²"),
        alice.get("/media/q-image/other/0"),
        bob.get("/q/q-image"),
        bob.get("/q/q-nope"),
    ]
    assert [r.status_code for r in answers] == [404] * len(answers)
    assert all(NOT_FOUND in r.text for r in answers)


def test_odd_numbers_and_unassigned_labels_are_4xx(env):
    store, app, _ = env
    alice, _ = login(app, "alice")
    csrf = page_token(alice, "/q/q-image")
    for bad in ("²", "--5", "٣", "4.0", "1e3", "9" * 40):
        r = alice.post("/q/q-image", data={**good_form(csrf), "r0_helpfulness": bad})
        assert r.status_code == 422, bad
        assert messages(r.text)[0].startswith("response 1 helpfulness must be a whole number")
    r = alice.post("/q/q-image", data={**good_form(csrf), "csrf": "é" * 43})  # was a 500
    assert r.status_code == 403
    r = alice.post("/q/q-image", data={**good_form(csrf), "revision": "²"})
    assert r.status_code == 409  # not a revision this page had
    r = alice.post("/q/q-third", data={**good_form(csrf, k=2), "r0_ethics": "9"})  # bob's
    assert r.status_code == 404 and NOT_FOUND in r.text
    assert store.history_count() == 0


def test_a_draft_cannot_outlive_a_submit(env):
    store, app, _ = env
    alice, _ = login(app, "alice")
    csrf = page_token(alice, "/q/q-image")
    assert alice.post("/q/q-image", data=good_form(csrf), follow_redirects=False).status_code == 303
    late = {"r0_helpfulness": "1", "revision": "0"}  # autosaved before the submit, sent after
    r = alice.post("/q/q-image/draft", json=late, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409 and store.draft("q-image", "alice") is None
    assert 'name="r0_helpfulness" value="4" checked' in alice.get("/q/q-image").text
    r = alice.post(
        "/q/q-image/draft", json={**late, "revision": "1"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200  # editing the submitted labels: drafts of revision 1


def test_security_headers_and_no_openapi(env):
    _, app, _ = env
    r = TestClient(app).get("/login")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert TestClient(app).get(path, follow_redirects=False).status_code == 404
