"""SQLite store: accounts, assignment, optimistic concurrency, atomic writes, restart."""

import sqlite3
import threading

import pytest

from mmrlhf_ray.annotate_app.labels import Labels, ResponseLabel
from mmrlhf_ray.annotate_app.store import Conflict, NotFound, Store, verify_password
from mmrlhf_ray.annotate_app.tasks import load_tasks
from tests.annotate_app.helpers import PASSWORDS, add_team


def labels(ranks, h=3):
    return Labels([ResponseLabel(h, 4, 5, r, "why") for r in ranks], "because")


@pytest.fixture
def store(run_dir):
    s = Store(f"{run_dir}/annotate-app/annotations.sqlite")
    tasks, media, problems = load_tasks(run_dir, "generate")
    assert (len(tasks), problems) == (3, [])
    assert s.add_tasks(tasks, media) == 3
    add_team(s)
    return s


def test_tasks_media_and_wal(store, run_dir):
    assert store.read("PRAGMA journal_mode")[0][0] == "wal"
    q = store.query("q-video")
    assert [r["text"] for r in q.task["responses"]] == [
        "It moves to the right.",
        "It moves up.",
        "It does not move.",
    ]
    assert store.media("q-image", "image", 0).startswith(b"\x89PNG")
    assert len(store.read("SELECT 1 FROM media WHERE query_id = 'q-video'")) == 3
    tasks, media, _ = load_tasks(run_dir, "generate")
    assert store.add_tasks(tasks, media) == 0  # reloading adds nothing, resets nothing


def test_passwords_are_hashed_and_sessions_work(store):
    stored = store.read("SELECT pw_hash FROM users WHERE name = 'alice'")[0][0]
    assert PASSWORDS["alice"] not in stored and stored.startswith("scrypt$")
    assert verify_password(PASSWORDS["alice"], stored) and not verify_password("nope", stored)
    assert store.login("alice", "wrong") is None
    token, session = store.login("alice", PASSWORDS["alice"])
    assert store.session(token) == session and session.role == "rater"
    assert token not in str(store.read("SELECT * FROM sessions")[0][:])  # only its hash
    store.logout(token)
    assert store.session(token) is None
    with pytest.raises(ValueError, match="exists"):
        store.add_user("alice", "rater", "x")


def test_assignment_is_balanced_idempotent_and_gold_goes_to_all(store):
    store.set_gold("q-third", labels([1, 2]))
    assert store.assign(1) == 2 + 2  # two queries x 1 rater, gold x both raters
    queues = {r: [row["query_id"] for row in store.queue(r)] for r in ("alice", "bob")}
    assert queues == {"alice": ["q-image", "q-third"], "bob": ["q-third", "q-video"]}
    assert store.assign(1) == 0
    assert store.assign(2) == 2  # the second rater of each query
    with pytest.raises(ValueError, match="only 2 raters"):
        store.assign(3)


def test_double_submit_stale_page_and_adjudication_lock(store):
    store.assign(2)
    assert store.submit("q-image", "alice", labels([1, 2, 3]), revision=0) == 1
    with pytest.raises(Conflict, match="out of date"):
        store.submit("q-image", "alice", labels([1, 2, 3]), revision=0)  # the same form again
    store.submit("q-image", "bob", labels([1, 1, 2]), revision=0)
    rev = store.query("q-image").labels_rev
    store.submit("q-image", "alice", labels([1, 2, 2]), revision=1)  # an edit
    with pytest.raises(Conflict, match="changed their labels"):
        store.adjudicate("q-image", "lead", labels([1, 2, 2]), labels_rev=rev)
    store.adjudicate("q-image", "lead", labels([1, 2, 2]), labels_rev=rev + 1)
    with pytest.raises(Conflict, match="adjudicated by lead"):
        store.submit("q-image", "bob", labels([1, 2, 3]), revision=1)
    with pytest.raises(Conflict, match="already adjudicated"):
        store.adjudicate("q-image", "lead", labels([1, 2, 3]), labels_rev=rev + 2)
    with pytest.raises(NotFound):
        store.submit("q-nope", "alice", labels([1]), revision=0)
    assert store.history_count() == 4  # 3 submissions + 1 adjudication, nothing else
    assert store.query("q-image").submissions[1].labels.ranks == [1, 2, 2]


def test_a_failed_transaction_writes_nothing(store):
    store.assign(2)
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("UPDATE assignments SET labels = 'x' WHERE rater = 'alice'")
        raise RuntimeError("crash mid-write")
    assert store.read("SELECT COUNT(*) FROM assignments WHERE labels IS NOT NULL")[0][0] == 0


def test_two_raters_submitting_at_once_lose_nothing(store):
    store.assign(2)
    barrier, errors = threading.Barrier(2), []

    def rate(rater, ranks):
        own = Store(store.path)  # another connection, as another server thread would have
        barrier.wait()
        try:
            for qid in ("q-image", "q-video"):
                own.submit(qid, rater, labels(ranks), revision=0)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [
        threading.Thread(target=rate, args=a) for a in (("alice", [1, 2, 3]), ("bob", [1, 1, 2]))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for qid in ("q-image", "q-video"):
        q = store.query(qid)
        assert sorted(s.rater for s in q.submissions) == ["alice", "bob"] and q.labels_rev == 2
    assert store.history_count() == 4


def test_reopening_the_file_loses_nothing(store):
    store.assign(2)
    store.submit("q-image", "alice", labels([1, 2, 3]), revision=0)
    store.save_draft("q-video", "alice", {"r0_helpfulness": "4"}, revision=0)
    again = Store(store.path)
    assert again.query("q-image").submissions[0].labels == labels([1, 2, 3])
    assert again.draft("q-video", "alice") == {"r0_helpfulness": "4"}
    assert sqlite3.connect(store.path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
