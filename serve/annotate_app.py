"""The annotation app's web layer: FastAPI routes over ``mmrlhf_ray.annotate_app``.

Server-rendered pages (Jinja2 templates in ``serve/annotate_templates/``); the only
JavaScript is ``app.js`` (keyboard shortcuts, draft autosave, image zoom, frame
player). Every form carries the session's CSRF token; cookies are HttpOnly and
SameSite=Strict. A rejected write re-renders the page with the message and returns a
4xx: 403 (CSRF / role), 404 (not assigned), 409 (double submit, stale page or draft),
413 (body too large), 415 (not a plain form), 422 (invalid labels), 429 (too many wrong
passwords). Nothing is written unless the whole form is valid.

Hostile input: ``BodyCap`` counts the bytes of every body (chunked ones too) before any
route sees it; a form or JSON body is parsed only after the session is checked (``/login``
aside); logins are throttled per name and per address (``LoginThrottle``, the store's
clock); media is served only to a lead or a rater assigned the query; every unknown or
unassigned query answers the same 404; pages carry ``nosniff`` and a content security
policy; there is no OpenAPI route.

Run with ``mmrlhf annotate-app run_dir=...`` (``jobs/annotate_app.py``).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mmrlhf_ray.annotate_app.assist import kept_counts
from mmrlhf_ray.annotate_app.export import export
from mmrlhf_ray.annotate_app.labels import (
    DIMENSIONS,
    RUBRIC,
    LabelError,
    labels_to_form,
    parse_form,
)
from mmrlhf_ray.annotate_app.review import agreement, review_query
from mmrlhf_ray.annotate_app.store import SESSION_SECONDS, Conflict, NotFound, Session, Store
from mmrlhf_ray.annotate_app.throttle import LoginThrottle
from serve.bodies import declared_length, read_capped, replaying

TEMPLATES = Path(__file__).with_name("annotate_templates")
COOKIE = "mmrlhf_session"
MAX_DRAFT_FIELDS = 200
MAX_MEDIA_INDEX = 10_000
MAX_PASSWORD_CHARS = 1024
NOT_FOUND = "not found: no such query in your queue"
INTEGER = re.compile(r"-?[0-9]{1,9}")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


@dataclass
class AppSettings:
    """What the web layer needs from the stage config."""

    run_dir: str
    raters_per_query: int = 2
    max_score_gap: int = 1
    max_reason_chars: int = 2000
    require_reasons: bool = True
    max_body_bytes: int = 1_000_000
    export_stage: str = "annotate"
    data_jsonl: str = ""
    secure_cookies: bool = False


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _html(status: int, message: str):
    return HTMLResponse(f"<!doctype html><title>Error {status}</title><p>{message}</p>", status)


class BodyCap:
    """ASGI middleware: counts the bytes of every request body (``Content-Length`` or
    chunked) and answers 413 past ``max_body_bytes``, before any route or parser runs."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        problem = declared_length(
            None if declared is None else declared.decode("latin-1"), self.limit
        )
        if problem:
            status = 400 if problem.startswith("not") else 413
            return await _html(status, f"Content-Length: {problem}")(scope, receive, send)
        try:
            body = await read_capped(receive, self.limit)
        except OverflowError:
            return await _html(413, f"request body over {self.limit} bytes")(scope, receive, send)
        if body is None:
            return None
        return await self.app(scope, replaying(body, receive), send)


def _image_type(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@dataclass
class Web:
    """What every request needs: the store, the settings and the templates."""

    store: Store
    settings: AppSettings
    env: Environment

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context["bad"] = {field for field, _ in context.get("errors") or []}
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)

    def session_of(self, request: Request) -> Session | None:
        return self.store.session(request.cookies.get(COOKIE))

    def require(self, request: Request, role: str | None = None) -> Session:
        session = self.session_of(request)
        if session is None:
            raise HttpError(401, "not logged in")
        if role and session.role != role:
            raise HttpError(403, f"this page is for the {role} role")
        return session

    def require_assigned(self, session: Session, query_id: str) -> None:
        """A lead sees every query; a rater only those assigned (else the one 404)."""
        if session.role == "lead" and self.store.read(
            "SELECT 1 FROM queries WHERE query_id = ?", (query_id,)
        ):
            return
        try:
            self.store.assignment(query_id, session.user)
        except NotFound as exc:
            raise HttpError(404, NOT_FOUND) from exc

    def frame_count(self, query_id: str) -> int:
        sql = "SELECT COUNT(*) FROM media WHERE query_id = ? AND kind = 'frame'"
        return self.store.read(sql, (query_id,))[0][0]

    def has_image(self, query_id: str) -> bool:
        return self.store.media(query_id, "image", 0) is not None


def check_csrf(session: Session, token: Any) -> None:
    # bytes: compare_digest refuses str with non-ASCII characters (TypeError, a 500)
    if not token or not hmac.compare_digest(str(token).encode(), session.csrf.encode()):
        raise HttpError(403, "the form's security token is missing or wrong: reload the page")


def web(request: Request) -> Web:
    return request.app.state.web


def _logged_in_first(request: Request) -> None:
    """The session is checked before a body is parsed (only ``/login`` parses without)."""
    if request.url.path != "/login" and web(request).session_of(request) is None:
        raise HttpError(401, "not logged in")


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form as strings. Handlers are plain functions that FastAPI runs in its
    thread pool, so password hashing and SQLite waits never block the event loop."""
    _logged_in_first(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HttpError(415, "expected a form (application/x-www-form-urlencoded)")
    return {k: str(v) for k, v in (await request.form()).items()}


async def json_fields(request: Request) -> dict[str, str]:
    _logged_in_first(request)
    try:
        body = await request.json()
    except (ValueError, RecursionError) as exc:
        raise HttpError(422, "draft: the body is not JSON") from exc
    if not isinstance(body, dict) or len(body) > MAX_DRAFT_FIELDS:
        raise HttpError(422, "draft: expected an object of form fields")
    return {str(k): str(v) for k, v in body.items()}


FormFields = Annotated[dict[str, str], Depends(form_fields)]
JsonFields = Annotated[dict[str, str], Depends(json_fields)]
router = APIRouter()


def create_app(
    store: Store, settings: AppSettings, throttle: LoginThrottle | None = None
) -> FastAPI:
    """The app over ``store``; routes are the module's ``router``. ``throttle``: the login
    limits (default: 5 wrong passwords a minute per name, 20 per address)."""
    app = FastAPI(title="mmrlhf annotate-app", docs_url=None, redoc_url=None, openapi_url=None)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    env.globals.update(DIMENSIONS=DIMENSIONS, RUBRIC=RUBRIC)
    app.state.web = Web(store, settings, env)
    app.state.throttle = throttle or LoginThrottle(clock=store.clock)
    app.add_middleware(BodyCap, max_body_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(HttpError)
    async def http_error(request: Request, exc: HttpError):
        if exc.status == 401 and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        w = web(request)
        return w.render(
            "message.html",
            exc.status,
            title=f"Error {exc.status}",
            message=str(exc),
            session=w.session_of(request),
        )

    app.include_router(router)
    return app


# ---- plumbing and login ---------------------------------------------------------------
@router.get("/healthz")
def healthz(request: Request) -> dict:
    return {"ok": True, "queries": web(request).store.read("SELECT COUNT(*) FROM queries")[0][0]}


@router.get("/static/app.js")
def script() -> Response:
    return Response((TEMPLATES / "app.js").read_text(), media_type="text/javascript")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request):
    return web(request).render("login.html", error=None, session=None)


@router.post("/login")
def login(request: Request, form: FormFields):
    w = web(request)
    throttle: LoginThrottle = request.app.state.throttle
    user, password = form.get("user", "")[:64], form.get("password", "")
    address = request.client.host if request.client else "?"
    wait = throttle.retry_after(user, address)
    if wait > 0:
        response = w.render(
            "login.html",
            429,
            error=f"too many wrong passwords: try again in {int(wait) + 1} s",
            session=None,
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    result = None
    if len(password) <= MAX_PASSWORD_CHARS:
        result = w.store.login(user, password)
    if result is None:
        throttle.failed(user, address)
        return w.render("login.html", 401, error="wrong user name or password", session=None)
    throttle.succeeded(user)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        result[0],
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=w.settings.secure_cookies,
    )
    return response


@router.post("/logout")
def logout(request: Request, form: FormFields):
    w = web(request)
    check_csrf(w.require(request), form.get("csrf"))
    w.store.logout(request.cookies[COOKIE])
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/")
def home(request: Request):
    session = web(request).require(request)
    return RedirectResponse("/lead" if session.role == "lead" else "/queue", status_code=303)


# ---- the rater --------------------------------------------------------------------------
def queue_context(w: Web, session: Session, query_id: str | None = None) -> dict[str, Any]:
    queue = w.store.queue(session.user)
    ids = [r["query_id"] for r in queue]
    index = ids.index(query_id) if query_id in ids else -1
    return {
        "queue": queue,
        "done": sum(r["submitted"] for r in queue),
        "index": index,
        "prev_id": ids[index - 1] if index > 0 else None,
        "next_id": ids[index + 1] if 0 <= index < len(ids) - 1 else None,
        "next_todo": next((r["query_id"] for r in queue if not r["submitted"]), None),
    }


@router.get("/queue", response_class=HTMLResponse)
def queue_page(request: Request):
    w = web(request)
    session = w.require(request)
    return w.render("queue.html", session=session, **queue_context(w, session))


def rate_page(
    w: Web,
    session: Session,
    query_id: str,
    status: int = 200,
    form: dict | None = None,
    errors: list | None = None,
) -> HTMLResponse:
    """The rater's page: the submitted labels, else the draft, else the posted form."""
    q = w.store.query(query_id)
    revision, submitted = w.store.assignment(query_id, session.user)
    assist = w.store.assist(query_id)
    if form is None:  # a draft is newer than the submission (submitting deletes it)
        draft = w.store.draft(query_id, session.user)
        form = draft or (labels_to_form(submitted) if submitted else {})
        if not form and assist:  # the reward model's critiques as starting reasons
            form = {f"r{i}_reason": c for i, c in enumerate(assist) if c}
    return w.render(
        "rate.html",
        status,
        session=session,
        q=q,
        task=q.task,
        form=form,
        errors=errors or [],
        revision=revision,
        submitted=submitted is not None,
        locked=q.adjudicated_by,
        n_frames=w.frame_count(query_id),
        has_image=w.has_image(query_id),
        assist=assist,
        **queue_context(w, session, query_id),
    )


@router.get("/q/{query_id}", response_class=HTMLResponse)
def rate_get(request: Request, query_id: str):
    w = web(request)
    session = w.require(request)
    try:
        return rate_page(w, session, query_id)
    except NotFound as exc:
        raise HttpError(404, NOT_FOUND) from exc


@router.post("/q/{query_id}")
def rate_post(request: Request, query_id: str, form: FormFields):
    w = web(request)
    session = w.require(request)
    check_csrf(session, form.get("csrf"))
    try:
        w.store.assignment(query_id, session.user)  # before any page is built from it
        k = len(w.store.query(query_id).task["responses"])
        labels = parse_form(form, k, w.settings.max_reason_chars, w.settings.require_reasons)
        used = kept_counts(w.store.assist(query_id), [r.reason for r in labels.responses])
        w.store.submit(query_id, session.user, labels, _int(form.get("revision")), used)
    except NotFound as exc:
        raise HttpError(404, NOT_FOUND) from exc
    except LabelError as exc:
        return rate_page(w, session, query_id, 422, form, exc.problems)
    except Conflict as exc:
        return rate_page(w, session, query_id, 409, form, [("page", str(exc))])
    target = queue_context(w, session, query_id)["next_todo"]
    return RedirectResponse(f"/q/{target}" if target else "/queue", status_code=303)


def _int(value: Any) -> int:
    """A form's revision: ASCII digits only (``²`` and ``--5`` pass ``isdigit``), else -1."""
    text = str(value or "").strip()
    return int(text) if INTEGER.fullmatch(text) else -1


@router.post("/q/{query_id}/draft")
def draft(request: Request, query_id: str, body: JsonFields):
    w = web(request)
    session = w.require(request)
    check_csrf(session, request.headers.get("x-csrf-token"))
    limit = w.settings.max_reason_chars + 1
    revision = _int(body.pop("revision", None))
    try:
        w.store.save_draft(
            query_id, session.user, {k: v[:limit] for k, v in body.items()}, revision
        )
    except NotFound as exc:
        raise HttpError(404, NOT_FOUND) from exc
    except Conflict as exc:  # sent before a submit, arrived after it: the labels stand
        return JSONResponse({"saved": False, "reason": str(exc)}, status_code=409)
    return JSONResponse({"saved": True})


@router.get("/media/{query_id}/{kind}/{idx}")
def media(request: Request, query_id: str, kind: str, idx: str):
    w = web(request)
    w.require_assigned(w.require(request), query_id)
    n = int(idx) if idx.isascii() and idx.isdigit() and len(idx) <= 5 else -1
    ok = kind in ("image", "frame") and 0 <= n < MAX_MEDIA_INDEX
    data = w.store.media(query_id, kind, n) if ok else None
    if data is None:
        raise HttpError(404, NOT_FOUND)
    return Response(data, media_type=_image_type(data))


# ---- the lead ---------------------------------------------------------------------------
def lead_page(w: Web, session: Session, status: int = 200, notice: str = "") -> HTMLResponse:
    queries = w.store.queries()
    s = w.settings
    reviews = {q.query_id: review_query(q, s.raters_per_query, s.max_score_gap) for q in queries}
    counts: dict[str, int] = {}
    for r in reviews.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    return w.render(
        "lead.html",
        status,
        session=session,
        queries=queries,
        reviews=reviews,
        counts=counts,
        report=agreement(queries),
        notice=notice,
        users=w.store.users(),
        assist_share=w.store.assist_share(),
        settings=s,
    )


@router.get("/lead", response_class=HTMLResponse)
def lead_get(request: Request):
    w = web(request)
    return lead_page(w, w.require(request, "lead"))


@router.post("/lead/assign")
def lead_assign(request: Request, form: FormFields):
    w = web(request)
    session = w.require(request, "lead")
    check_csrf(session, form.get("csrf"))
    try:
        made = w.store.assign(w.settings.raters_per_query)
    except ValueError as exc:
        return lead_page(w, session, 422, f"assign: {exc}")
    return lead_page(w, session, notice=f"assigned {made} new rater-query pairs")


@router.post("/lead/export")
def lead_export(request: Request, form: FormFields):
    w = web(request)
    session = w.require(request, "lead")
    check_csrf(session, form.get("csrf"))
    s = w.settings
    summary = export(
        w.store, s.run_dir, s.export_stage, s.data_jsonl, s.raters_per_query, s.max_score_gap
    )
    return lead_page(
        w,
        session,
        notice=f"exported {summary['records']} records to "
        f"{summary['stage']} and {summary['data_jsonl']}",
    )


def adjudicate_page(
    w: Web,
    session: Session,
    query_id: str,
    status: int = 200,
    form: dict | None = None,
    errors: list | None = None,
) -> HTMLResponse:
    """The raters' labels side by side and a form for the final ones (prefilled from the
    adjudication, else the first submission)."""
    q = w.store.query(query_id)
    review = review_query(q, w.settings.raters_per_query, w.settings.max_score_gap)
    if form is None:
        base = q.adjudication or (q.submissions[0].labels if q.submissions else None)
        form = labels_to_form(base) if base else {}
    return w.render(
        "adjudicate.html",
        status,
        session=session,
        q=q,
        task=q.task,
        review=review,
        form=form,
        errors=errors or [],
        n_frames=w.frame_count(query_id),
        has_image=w.has_image(query_id),
    )


@router.get("/adjudicate/{query_id}", response_class=HTMLResponse)
def adjudicate_get(request: Request, query_id: str):
    w = web(request)
    session = w.require(request, "lead")
    try:
        return adjudicate_page(w, session, query_id)
    except NotFound as exc:
        raise HttpError(404, NOT_FOUND) from exc


@router.post("/adjudicate/{query_id}")
def adjudicate_post(request: Request, query_id: str, form: FormFields):
    w = web(request)
    session = w.require(request, "lead")
    check_csrf(session, form.get("csrf"))
    try:
        k = len(w.store.query(query_id).task["responses"])
        labels = parse_form(form, k, w.settings.max_reason_chars, w.settings.require_reasons)
        w.store.adjudicate(query_id, session.user, labels, _int(form.get("labels_rev")))
    except NotFound as exc:
        raise HttpError(404, NOT_FOUND) from exc
    except LabelError as exc:
        return adjudicate_page(w, session, query_id, 422, form, exc.problems)
    except Conflict as exc:
        return adjudicate_page(w, session, query_id, 409, form, [("page", str(exc))])
    return RedirectResponse("/lead", status_code=303)
