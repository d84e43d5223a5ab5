"""The annotation app's storage: one SQLite file in WAL mode, every write one transaction.

Tables: ``users`` (scrypt-hashed passwords), ``sessions`` (hashed cookie tokens, with
the session's CSRF token), ``queries`` (the task as JSON, gold labels, the
adjudication), ``media`` (image / video frame bytes), ``assignments`` (which rater
labels which query, their submitted labels and a revision counter), ``drafts``
(autosaved unfinished forms), ``assist`` / ``assist_use`` (optional reward-model draft
reasons; drafts shown and kept per submission) and ``history`` (an append-only log of
every submission and adjudication, written in the same transaction).

Optimistic concurrency, so that two raters never overwrite each other and a stale page
is refused rather than silently applied:

* a rater's form carries the revision of their assignment; submitting bumps it, so the
  same form posted twice (double submit) or an old tab is refused with ``Conflict``;
* once a query is adjudicated its raters' labels are locked (``Conflict``);
* the adjudicator's form carries the query's ``labels_rev`` (bumped by every rater
  submission): labels changed since the page was opened, or an adjudication already
  made, are refused.

Writes take ``BEGIN IMMEDIATE`` (one writer at a time, others wait up to
``busy_timeout``); each request opens its own connection, so the store is safe to use
from server threads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mmrlhf_ray.annotate_app.labels import Labels

ROLES = ("rater", "lead")
SESSION_SECONDS = 7 * 24 * 3600  # a login lasts a week at most
IDLE_SECONDS = 8 * 3600  # and ends after 8 hours without a request
TOUCH_SECONDS = 60  # a session's last_seen is rewritten at most once a minute
SCHEMA = """
CREATE TABLE IF NOT EXISTS users(
  name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
  token_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
  csrf TEXT NOT NULL, created REAL NOT NULL, last_seen REAL);
CREATE TABLE IF NOT EXISTS queries(
  query_id TEXT PRIMARY KEY, position INTEGER NOT NULL, task TEXT NOT NULL, gold TEXT,
  labels_rev INTEGER NOT NULL DEFAULT 0, adjudication TEXT, adjudicated_by TEXT,
  adjudicated_at REAL);
CREATE TABLE IF NOT EXISTS media(
  query_id TEXT NOT NULL, kind TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY(query_id, kind, idx));
CREATE TABLE IF NOT EXISTS assignments(
  query_id TEXT NOT NULL REFERENCES queries(query_id), rater TEXT NOT NULL REFERENCES users(name),
  assigned_at REAL NOT NULL, revision INTEGER NOT NULL DEFAULT 0, labels TEXT,
  submitted_at REAL, PRIMARY KEY(query_id, rater));
CREATE TABLE IF NOT EXISTS drafts(
  query_id TEXT NOT NULL, rater TEXT NOT NULL, form TEXT NOT NULL, saved_at REAL NOT NULL,
  PRIMARY KEY(query_id, rater));
CREATE TABLE IF NOT EXISTS assist(
  query_id TEXT PRIMARY KEY REFERENCES queries(query_id), critiques TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assist_use(
  query_id TEXT NOT NULL, rater TEXT NOT NULL, shown INTEGER NOT NULL, kept INTEGER NOT NULL,
  PRIMARY KEY(query_id, rater));
CREATE TABLE IF NOT EXISTS history(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, query_id TEXT, payload TEXT);
"""


class Conflict(Exception):
    """The write is refused because the page it came from is out of date (HTTP 409)."""


class NotFound(Exception):
    """No such query, or the query is not assigned to this rater (HTTP 404)."""


# ---- passwords ---------------------------------------------------------------------------
def hash_password(password: str, salt: bytes | None = None) -> str:
    """scrypt (n=2^14, r=8, p=1) with a random 16-byte salt: ``scrypt$<salt>$<hash>``."""
    if not password:
        raise ValueError("password: empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, salt, _ = stored.split("$")
        return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)
    except ValueError:
        return False


@cache
def _dummy_hash() -> str:
    """A hash no password matches: unknown names cost the same scrypt as known ones, so
    the answer's timing does not tell which accounts exist."""
    return hash_password(secrets.token_urlsafe(16))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    user: str
    role: str
    csrf: str


@dataclass
class Submission:
    rater: str
    labels: Labels
    submitted_at: float
    revision: int


@dataclass
class QueryRow:
    """A query as stored: the task, gold labels, raters' submissions, the adjudication."""

    query_id: str
    position: int
    task: dict[str, Any]
    gold: Labels | None
    labels_rev: int
    assigned: list[str]
    submissions: list[Submission]  # in submission order
    adjudication: Labels | None
    adjudicated_by: str | None


class Store:
    """The SQLite file at ``path`` (created with its schema on first use)."""

    def __init__(
        self,
        path: str | Path,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ):
        self.path = str(path)
        self.busy_timeout_s = busy_timeout_s
        self.clock = clock  # tests pass a fake clock (sessions' ages, timestamps)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            columns = {r["name"] for r in conn.execute("PRAGMA table_info(sessions)")}
            if "last_seen" not in columns:  # a store made before idle timeouts
                conn.execute("ALTER TABLE sessions ADD COLUMN last_seen REAL")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=FULL")
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._connect() as conn:
            return conn.execute(sql, args).fetchall()

    # ---- users and sessions --------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str, replace: bool = False) -> bool:
        """Create an account; an existing name is refused unless ``replace``, which resets
        its role and password and ends every session it has. Returns True if replaced."""
        if role not in ROLES:
            raise ValueError(f"role: {role!r} not one of {ROLES}")
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"user: {name!r} must be letters, digits, '-', '_' or '.'")
        if not name.isascii() or len(name) > 64:
            raise ValueError(f"user: {name!r} must be at most 64 ASCII characters")
        pw_hash = hash_password(password)
        with self.transaction() as conn:
            exists = conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
            if exists and not replace:
                raise ValueError(f"user: {name!r} exists (replace=true to reset the password)")
            if exists:
                conn.execute(
                    "UPDATE users SET role = ?, pw_hash = ? WHERE name = ?", (role, pw_hash, name)
                )
                conn.execute("DELETE FROM sessions WHERE user = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?)", (name, role, pw_hash, self.clock())
                )
        return bool(exists)

    def users(self) -> list[tuple[str, str]]:
        return [
            (r["name"], r["role"]) for r in self.read("SELECT name, role FROM users ORDER BY name")
        ]

    def login(self, name: str, password: str) -> tuple[str, Session] | None:
        """A new session (cookie token, Session) for a correct password, else None.

        An unknown name is checked against a dummy hash (same cost, same answer). Expired
        sessions are purged here."""
        rows = self.read("SELECT role, pw_hash FROM users WHERE name = ?", (name,))
        stored = rows[0]["pw_hash"] if rows else _dummy_hash()
        if not verify_password(password, stored) or not rows:
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM sessions WHERE created <= ? OR COALESCE(last_seen, created) <= ?",
                (now - SESSION_SECONDS, now - IDLE_SECONDS),
            )
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (_token_hash(token), name, csrf, now, now),
            )
        return token, Session(name, rows[0]["role"], csrf)

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie token: younger than ``SESSION_SECONDS`` and used
        within ``IDLE_SECONDS`` (each use extends it)."""
        if not token or len(token) > 256:
            return None
        now, key = self.clock(), _token_hash(token)
        rows = self.read(
            "SELECT s.user, u.role, s.csrf, COALESCE(s.last_seen, s.created) AS seen "
            "FROM sessions s JOIN users u ON u.name = s.user "
            "WHERE s.token_hash = ? AND s.created > ? AND COALESCE(s.last_seen, s.created) > ?",
            (key, now - SESSION_SECONDS, now - IDLE_SECONDS),
        )
        if not rows:
            return None
        if now - rows[0]["seen"] > TOUCH_SECONDS:
            with self.transaction() as conn:
                conn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, key))
        return Session(rows[0]["user"], rows[0]["role"], rows[0]["csrf"])

    def sessions_of(self, name: str) -> int:
        return self.read("SELECT COUNT(*) FROM sessions WHERE user = ?", (name,))[0][0]

    def logout(self, token: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))

    # ---- tasks, gold, media --------------------------------------------------------------
    def add_tasks(self, tasks: Sequence[dict[str, Any]], media: dict[str, dict]) -> int:
        """Insert new queries (existing ids are left alone: labels are never reset).

        ``media[query_id]`` = {"image": bytes | None, "frames": [bytes, ...]}. Returns
        the number of queries added.
        """
        with self.transaction() as conn:
            start = conn.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM queries").fetchone()[
                0
            ]
            added = 0
            for task in tasks:
                qid = task["query_id"]
                cur = conn.execute(
                    "INSERT OR IGNORE INTO queries(query_id, position, task) VALUES (?, ?, ?)",
                    (qid, start + added, json.dumps(task)),
                )
                if not cur.rowcount:
                    continue
                added += 1
                item = media.get(qid) or {}
                if item.get("image"):
                    conn.execute(
                        "INSERT INTO media VALUES (?, 'image', 0, ?)", (qid, item["image"])
                    )
                for i, frame in enumerate(item.get("frames") or []):
                    conn.execute("INSERT INTO media VALUES (?, 'frame', ?, ?)", (qid, i, frame))
        return added

    def set_gold(self, query_id: str, labels: Labels) -> None:
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE queries SET gold = ? WHERE query_id = ?",
                (json.dumps(labels.to_dict()), query_id),
            )
            if not cur.rowcount:
                raise NotFound(f"gold: query {query_id!r} is not among the tasks")

    def media(self, query_id: str, kind: str, idx: int) -> bytes | None:
        rows = self.read(
            "SELECT data FROM media WHERE query_id = ? AND kind = ? AND idx = ?",
            (query_id, kind, idx),
        )
        return rows[0]["data"] if rows else None

    # ---- assignment ----------------------------------------------------------------------
    def assign(self, raters_per_query: int, raters: Sequence[str] | None = None) -> int:
        """Give every query ``raters_per_query`` raters (gold queries: every rater).

        Queries go in order; each takes the raters with the fewest assignments so far
        (ties by name), never the same rater twice. Idempotent: queries that already
        have enough raters are skipped. Returns the number of assignments made.
        """
        pool = list(raters) if raters is not None else [n for n, r in self.users() if r == "rater"]
        if raters_per_query > len(pool):
            raise ValueError(f"raters_per_query={raters_per_query} but only {len(pool)} raters")
        with self.transaction() as conn:
            load = {name: 0 for name in pool}
            for row in conn.execute("SELECT rater, COUNT(*) n FROM assignments GROUP BY rater"):
                if row["rater"] in load:
                    load[row["rater"]] = row["n"]
            made, now = 0, self.clock()
            for q in conn.execute(
                "SELECT query_id, gold FROM queries ORDER BY position"
            ).fetchall():
                have = {
                    r[0]
                    for r in conn.execute(
                        "SELECT rater FROM assignments WHERE query_id = ?", (q["query_id"],)
                    )
                }
                want = len(pool) if q["gold"] else raters_per_query
                free = sorted((n for n in pool if n not in have), key=lambda n: (load[n], n))
                for name in free[: max(0, want - len(have))]:
                    conn.execute(
                        "INSERT INTO assignments(query_id, rater, assigned_at) VALUES (?, ?, ?)",
                        (q["query_id"], name, now),
                    )
                    load[name] += 1
                    made += 1
        return made

    def queue(self, rater: str) -> list[sqlite3.Row]:
        """The rater's queries in order: query_id, position, submitted (0/1), locked (0/1)."""
        return self.read(
            "SELECT a.query_id, q.position, a.labels IS NOT NULL AS submitted, "
            "q.adjudication IS NOT NULL AS locked FROM assignments a "
            "JOIN queries q ON q.query_id = a.query_id WHERE a.rater = ? ORDER BY q.position",
            (rater,),
        )

    # ---- reading a query -----------------------------------------------------------------
    def query(self, query_id: str) -> QueryRow:
        rows = self._query_rows("WHERE query_id = ?", (query_id,))
        if not rows:
            raise NotFound(f"no query {query_id!r}")
        return rows[0]

    def queries(self) -> list[QueryRow]:
        return self._query_rows("", ())

    def _query_rows(self, where: str, args: Sequence[Any]) -> list[QueryRow]:
        """Queries with their assignments, read in one snapshot (one read transaction),
        so a page's ``labels_rev`` always matches the submissions it shows."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            queries = conn.execute(f"SELECT * FROM queries {where} ORDER BY position", args)
            queries = queries.fetchall()
            assigned: dict[str, list] = {q["query_id"]: [] for q in queries}
            for a in conn.execute(
                f"SELECT query_id, rater, labels, submitted_at, revision FROM assignments "
                f"{where} ORDER BY submitted_at IS NULL, submitted_at, rater",
                args,
            ):
                assigned[a["query_id"]].append(a)
            conn.execute("COMMIT")
        return [_query_row(q, assigned[q["query_id"]]) for q in queries]

    def assignment(self, query_id: str, rater: str) -> tuple[int, Labels | None]:
        """(revision, submitted labels or None) of the rater's assignment, else NotFound."""
        rows = self.read(
            "SELECT revision, labels FROM assignments WHERE query_id = ? AND rater = ?",
            (query_id, rater),
        )
        if not rows:
            raise NotFound(f"query {query_id!r} is not assigned to {rater!r}")
        return rows[0]["revision"], _labels(rows[0]["labels"])

    # ---- writes --------------------------------------------------------------------------
    def submit(
        self,
        query_id: str,
        rater: str,
        labels: Labels,
        revision: int,
        assist_use: tuple[int, int] | None = None,
    ) -> int:
        """Store a rater's labels if the page they came from is current; returns the new
        revision. Raises Conflict (double submit, stale page, adjudicated) or NotFound."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT a.revision, q.adjudicated_by FROM assignments a JOIN queries q "
                "ON q.query_id = a.query_id WHERE a.query_id = ? AND a.rater = ?",
                (query_id, rater),
            ).fetchone()
            if row is None:
                raise NotFound(f"query {query_id!r} is not assigned to {rater!r}")
            if row["adjudicated_by"]:
                raise Conflict(
                    f"query {query_id} was adjudicated by {row['adjudicated_by']} "
                    "while this page was open: its labels are final and locked"
                )
            if row["revision"] != revision:
                raise Conflict(
                    f"query {query_id}: this page is out of date (labels already "
                    f"submitted, revision {row['revision']}); reload to edit them"
                )
            payload = json.dumps(labels.to_dict())
            now = self.clock()
            conn.execute(
                "UPDATE assignments SET labels = ?, submitted_at = ?, "
                "revision = revision + 1 WHERE query_id = ? AND rater = ?",
                (payload, now, query_id, rater),
            )
            conn.execute(
                "UPDATE queries SET labels_rev = labels_rev + 1 WHERE query_id = ?", (query_id,)
            )
            conn.execute("DELETE FROM drafts WHERE query_id = ? AND rater = ?", (query_id, rater))
            if assist_use and assist_use[0]:
                conn.execute(
                    "INSERT OR REPLACE INTO assist_use VALUES (?, ?, ?, ?)",
                    (query_id, rater, *assist_use),
                )
            conn.execute(
                "INSERT INTO history(at, actor, action, query_id, payload) "
                "VALUES (?, ?, 'submit', ?, ?)",
                (now, rater, query_id, payload),
            )
        return revision + 1

    def adjudicate(self, query_id: str, lead: str, labels: Labels, labels_rev: int) -> None:
        """Final labels for a query whose raters disagree; refused (Conflict) when the
        raters' labels changed since the adjudicator's page was opened, or it is done."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT labels_rev, adjudicated_by FROM queries WHERE query_id = ?", (query_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no query {query_id!r}")
            if row["adjudicated_by"]:
                raise Conflict(
                    f"query {query_id} was already adjudicated by "
                    f"{row['adjudicated_by']}: reload to see the final labels"
                )
            if row["labels_rev"] != labels_rev:
                raise Conflict(
                    f"query {query_id}: a rater changed their labels since this page "
                    "was opened; reload and adjudicate again"
                )
            payload, now = json.dumps(labels.to_dict()), self.clock()
            conn.execute(
                "UPDATE queries SET adjudication = ?, adjudicated_by = ?, "
                "adjudicated_at = ?, labels_rev = labels_rev + 1 WHERE query_id = ?",
                (payload, lead, now, query_id),
            )
            conn.execute(
                "INSERT INTO history(at, actor, action, query_id, payload) "
                "VALUES (?, ?, 'adjudicate', ?, ?)",
                (now, lead, query_id, payload),
            )

    def save_draft(self, query_id: str, rater: str, form: dict[str, str], revision: int) -> None:
        """Keep an unfinished form, if it comes from the assignment's current revision: a
        draft sent before a submit and arriving after it is refused (Conflict), so it can
        never stand in for the labels just submitted."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT revision FROM assignments WHERE query_id = ? AND rater = ?",
                (query_id, rater),
            ).fetchone()
            if row is None:
                raise NotFound(f"query {query_id!r} is not assigned to {rater!r}")
            if row["revision"] != revision:
                raise Conflict(
                    f"query {query_id}: draft of revision {revision}, labels are at "
                    f"{row['revision']}"
                )
            conn.execute(
                "INSERT OR REPLACE INTO drafts VALUES (?, ?, ?, ?)",
                (query_id, rater, json.dumps(form), self.clock()),
            )

    def draft(self, query_id: str, rater: str) -> dict[str, str] | None:
        rows = self.read(
            "SELECT form FROM drafts WHERE query_id = ? AND rater = ?", (query_id, rater)
        )
        return json.loads(rows[0]["form"]) if rows else None

    def set_assist(self, query_id: str, critiques: list[str]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO assist VALUES (?, ?)", (query_id, json.dumps(critiques))
            )

    def assist(self, query_id: str) -> list[str] | None:
        rows = self.read("SELECT critiques FROM assist WHERE query_id = ?", (query_id,))
        return json.loads(rows[0]["critiques"]) if rows else None

    def assist_share(self) -> tuple[int, int]:
        """(reward-model drafts shown, kept unchanged) over every submission."""
        row = self.read("SELECT COALESCE(SUM(shown), 0), COALESCE(SUM(kept), 0) FROM assist_use")
        return row[0][0], row[0][1]

    def history_count(self) -> int:
        return self.read("SELECT COUNT(*) FROM history")[0][0]


def _query_row(row: sqlite3.Row, assigned: list[sqlite3.Row]) -> QueryRow:
    return QueryRow(
        query_id=row["query_id"],
        position=row["position"],
        task=json.loads(row["task"]),
        gold=_labels(row["gold"]),
        labels_rev=row["labels_rev"],
        assigned=[a["rater"] for a in assigned],
        submissions=[
            Submission(a["rater"], _labels(a["labels"]), a["submitted_at"], a["revision"])
            for a in assigned
            if a["labels"]
        ],
        adjudication=_labels(row["adjudication"]),
        adjudicated_by=row["adjudicated_by"],
    )


def _labels(text: str | None) -> Labels | None:
    return Labels.from_dict(json.loads(text)) if text else None
