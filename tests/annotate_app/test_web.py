"""The web layer's answers to bad input: a 4xx, the message on the page, nothing written."""

import re

import pytest
from fastapi.testclient import TestClient

from mmrlhf_ray.annotate_app.labels import Labels, ResponseLabel
from serve.annotate_app import AppSettings, create_app
from tests.annotate_app.helpers import PASSWORDS, team_store


@pytest.fixture
def env(run_dir):
    store = team_store(run_dir)
    settings = AppSettings(
        run_dir=run_dir,
        max_reason_chars=50,
        max_body_bytes=20_000,
        data_jsonl=f"{run_dir}/annotate-app/data.jsonl",
    )
    return store, create_app(store, settings)


def client(app, user):
    c = TestClient(app)
    r = c.post("/login", data={"user": user, "password": PASSWORDS[user]}, follow_redirects=False)
    assert r.status_code == 303
    return c


def page_token(c, url, name="csrf"):
    return re.search(rf'name="{name}" value="([^"]*)"', c.get(url).text).group(1)


def good_form(csrf, revision=0, k=3):
    form = {"csrf": csrf, "revision": str(revision), "ranking_reason": "first is right"}
    for i in range(k):
        form.update(
            {
                f"r{i}_helpfulness": "4",
                f"r{i}_faithfulness": "4",
                f"r{i}_ethics": "5",
                f"r{i}_rank": str(i + 1),
                f"r{i}_reason": "fine",
            }
        )
    return form


def messages(html):
    box = re.search(r'<div class="errors" id="errors".*?</div>', html, re.S)
    return re.findall(r"<li>(.*?)</li>", box.group(0)) if box else []


def nothing_written(store):
    return (
        store.history_count(),
        store.read("SELECT COUNT(*) FROM assignments WHERE labels IS NOT NULL")[0][0],
    )


def test_bad_inputs_get_4xx_a_message_and_write_nothing(env):
    store, app = env
    alice = client(app, "alice")
    csrf = page_token(alice, "/q/q-image")
    cases = [
        ({"r1_ethics": "7"}, 422, "response 2 ethics is 7, outside 1-5"),
        ({"r0_helpfulness": ""}, 422, "response 1 helpfulness is missing"),
        ({"r1_rank": "3", "r2_rank": "3"}, 422, "ranks 1, 3, 3 are not a ranking"),
        ({"r2_reason": "x" * 51}, 422, "response 3 reason is 51 characters, over the limit of 50"),
        ({"r0_rank": "1", "r1_rank": "1", "r2_rank": "1"}, 422, "all responses are tied"),
    ]
    for change, status, message in cases:
        r = alice.post("/q/q-image", data={**good_form(csrf), **change})
        assert r.status_code == status, change
        assert any(m.startswith(message) for m in messages(r.text)), (change, messages(r.text))
        assert nothing_written(store) == (0, 0)
    r = alice.post("/q/q-image", data={**good_form(csrf), "csrf": "forged"})
    assert r.status_code == 403 and "security token" in r.text
    r = alice.post("/q/q-image", data={**good_form(csrf), "r0_reason": "x" * 30_000})
    assert r.status_code == 413
    r = TestClient(app).post("/q/q-image", data=good_form(csrf))
    assert r.status_code == 401
    assert nothing_written(store) == (0, 0)
    # a valid submit; the same form again is a double submit
    assert alice.post("/q/q-image", data=good_form(csrf), follow_redirects=False).status_code == 303
    r = alice.post("/q/q-image", data=good_form(csrf))
    assert r.status_code == 409 and "this page is out of date" in messages(r.text)[0]
    assert nothing_written(store) == (1, 1)


def test_stale_pages_after_adjudication_and_roles(env):
    store, app = env
    alice, bob, lead = client(app, "alice"), client(app, "bob"), client(app, "lead")
    assert bob.get("/lead").status_code == 403
    csrf_a, csrf_b = page_token(alice, "/q/q-image"), page_token(bob, "/q/q-image")
    alice.post("/q/q-image", data=good_form(csrf_a))
    lead_csrf, rev = (
        page_token(lead, "/adjudicate/q-image"),
        page_token(lead, "/adjudicate/q-image", "labels_rev"),
    )
    bob.post("/q/q-image", data={**good_form(csrf_b), "r2_rank": "2"})  # changes the picture
    r = lead.post("/adjudicate/q-image", data={**good_form(lead_csrf), "labels_rev": rev})
    assert r.status_code == 409 and "a rater changed their labels" in messages(r.text)[0]
    rev = page_token(lead, "/adjudicate/q-image", "labels_rev")
    r = lead.post(
        "/adjudicate/q-image",
        data={**good_form(lead_csrf), "labels_rev": rev},
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = bob.post("/q/q-image", data={**good_form(csrf_b, revision=1)})  # bob's open tab
    assert r.status_code == 409 and "adjudicated by lead" in messages(r.text)[0]
    assert store.query("q-image").adjudication.ranks == [1, 2, 3]
    assert store.history_count() == 3


def test_drafts_and_media_need_the_right_session(env):
    store, app = env
    alice = client(app, "alice")
    csrf = page_token(alice, "/q/q-video")
    draft = {"r0_helpfulness": "4", "revision": "0"}
    r = alice.post("/q/q-video/draft", json=draft, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and store.draft("q-video", "alice") == {"r0_helpfulness": "4"}
    assert 'name="r0_helpfulness" value="4" checked' in alice.get("/q/q-video").text
    r = alice.post(
        "/q/q-video/draft", json={**draft, "r0_helpfulness": "5"}, headers={"X-CSRF-Token": "x"}
    )
    assert r.status_code == 403 and store.draft("q-video", "alice") == {"r0_helpfulness": "4"}
    r = alice.post("/q/q-video/draft", content=b"{not json", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "not JSON" in r.text
    assert alice.get("/media/q-video/frame/2").content.startswith(b"\x89PNG")
    assert alice.get("/media/q-video/frame/9").status_code == 404
    assert TestClient(app).get("/media/q-video/frame/0", follow_redirects=False).status_code == 303
    assert alice.get("/q/q-nope").status_code == 404


def test_model_text_is_escaped(env):
    store, app = env
    task = {
        "query_id": "q-xss",
        "question": "<img src=x onerror=alert(1)>",
        "responses": [{"response_id": "a", "model": "m", "text": "<script>alert(1)</script>"}],
    }
    store.add_tasks([task], {})
    store.assign(2)
    html = client(app, "alice").get("/q/q-xss").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "<img src=x" not in html


def test_lead_dashboard_shows_agreement(env):
    store, app = env
    for rater, ranks in (("alice", [1, 2, 3]), ("bob", [1, 2, 2])):
        store.submit(
            "q-image", rater, Labels([ResponseLabel(4, 4, 5, r, "x") for r in ranks], "y"), 0
        )
    html = client(app, "lead").get("/lead").text
    assert re.search(r'id="tau-q-image">0.8165<', html)  # 2 / sqrt(6)
    assert re.search(r'id="count-disputed">1<', html)
