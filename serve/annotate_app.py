"""The annotation app's web layer: FastAPI routes over ``mmrlhf_ray.annotate_app``.

Server-rendered pages (Jinja2 templates in ``serve/annotate_templates/``); the only
JavaScript is ``app.js`` (keyboard shortcuts, draft autosave, image zoom, frame
player). Every form carries the session's CSRF token; cookies are HttpOnly and
SameSite=Strict. A rejected write re-renders the page with the message and returns a
4xx: 403 (CSRF / role), 404 (not assigned), 409 (double submit, stale page), 413 (body
too large), 422 (invalid labels). Nothing is written unless the whole form is valid.

Run with ``mmrlhf annotate-app run_dir=...`` (``jobs/annotate_app.py``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mmrlhf_ray.annotate_app.export import export
from mmrlhf_ray.annotate_app.labels import (
    DIMENSIONS,
    RUBRIC,
    LabelError,
    labels_to_form,
    parse_form,
)
from mmrlhf_ray.annotate_app.review import agreement, review_query
from mmrlhf_ray.annotate_app.store import Conflict, NotFound, Session, Store

TEMPLATES = Path(__file__).with_name("annotate_templates")
COOKIE = "mmrlhf_session"
MAX_DRAFT_FIELDS = 200


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


def _image_type(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def create_app(store: Store, settings: AppSettings) -> FastAPI:
    app = FastAPI(title="mmrlhf annotate-app", docs_url=None, redoc_url=None)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    env.globals.update(DIMENSIONS=DIMENSIONS, RUBRIC=RUBRIC)

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context["bad"] = {field for field, _ in context.get("errors") or []}
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    # ---- plumbing ---------------------------------------------------------------------
    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            return HTMLResponse(f"request body over {settings.max_body_bytes} bytes",
                                status_code=413)
        response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        return response

    def session_of(request: Request) -> Session | None:
        return store.session(request.cookies.get(COOKIE))

    def require(request: Request, role: str | None = None) -> Session:
        session = session_of(request)
        if session is None:
            raise HttpError(401, "not logged in")
        if role and session.role != role:
            raise HttpError(403, f"this page is for the {role} role")
        return session

    def check_csrf(session: Session, token: str | None) -> None:
        if not token or not hmac.compare_digest(token, session.csrf):
            raise HttpError(403, "the form's security token is missing or wrong: reload the page")

    @app.exception_handler(HttpError)
    async def http_error(request: Request, exc: HttpError):
        if exc.status == 401 and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return render("message.html", exc.status, title=f"Error {exc.status}", message=str(exc),
                      session=session_of(request))

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "queries": store.read("SELECT COUNT(*) FROM queries")[0][0]}

    @app.get("/static/app.js")
    def script() -> Response:
        return Response((TEMPLATES / "app.js").read_text(), media_type="text/javascript")

    # ---- login ------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        return render("login.html", error=None, session=None)

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        result = store.login(str(form.get("user", "")), str(form.get("password", "")))
        if result is None:
            return render("login.html", 401, error="wrong user name or password", session=None)
        token, _ = result
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                            secure=settings.secure_cookies)
        return response

    @app.post("/logout")
    async def logout(request: Request):
        session = require(request)
        check_csrf(session, (await request.form()).get("csrf"))
        store.logout(request.cookies[COOKIE])
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/")
    def home(request: Request):
        session = require(request)
        return RedirectResponse("/lead" if session.role == "lead" else "/queue", status_code=303)

    # ---- the rater ------------------------------------------------------------------
    def queue_context(session: Session, query_id: str | None = None) -> dict[str, Any]:
        queue = store.queue(session.user)
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

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request):
        session = require(request)
        return render("queue.html", session=session, **queue_context(session))

    def rate_page(session: Session, query_id: str, status: int = 200,
                  form: dict | None = None, errors: list | None = None) -> HTMLResponse:
        q = store.query(query_id)
        revision, submitted = store.assignment(query_id, session.user)
        if form is None:
            draft = store.draft(query_id, session.user)
            form = labels_to_form(submitted) if submitted else (draft or {})
        context = queue_context(session, query_id)
        return render("rate.html", status, session=session, q=q, task=q.task, form=form,
                      errors=errors or [], revision=revision, submitted=submitted is not None,
                      locked=q.adjudicated_by, n_frames=_frame_count(query_id),
                      has_image=store.media(query_id, "image", 0) is not None, **context)

    @app.get("/q/{query_id}", response_class=HTMLResponse)
    def rate_get(request: Request, query_id: str):
        session = require(request)
        try:
            return rate_page(session, query_id)
        except NotFound as exc:
            raise HttpError(404, str(exc)) from exc

    @app.post("/q/{query_id}")
    async def rate_post(request: Request, query_id: str):
        session = require(request)
        form = {k: str(v) for k, v in (await request.form()).items()}
        check_csrf(session, form.get("csrf"))
        try:
            q = store.query(query_id)
            labels = parse_form(form, len(q.task["responses"]), settings.max_reason_chars,
                                settings.require_reasons)
            revision = int(form.get("revision", "-1") or -1)
            store.submit(query_id, session.user, labels, revision)
        except NotFound as exc:
            raise HttpError(404, str(exc)) from exc
        except LabelError as exc:
            return rate_page(session, query_id, 422, form, exc.problems)
        except Conflict as exc:
            return rate_page(session, query_id, 409, form, [("page", str(exc))])
        after = queue_context(session, query_id)
        target = after["next_todo"]
        return RedirectResponse(f"/q/{target}" if target else "/queue", status_code=303)

    @app.post("/q/{query_id}/draft")
    async def draft(request: Request, query_id: str):
        session = require(request)
        check_csrf(session, request.headers.get("x-csrf-token"))
        body = await request.json()
        if not isinstance(body, dict) or len(body) > MAX_DRAFT_FIELDS:
            raise HttpError(422, "draft: expected an object of form fields")
        form = {str(k): str(v)[: settings.max_reason_chars + 1] for k, v in body.items()}
        try:
            store.save_draft(query_id, session.user, form)
        except NotFound as exc:
            raise HttpError(404, str(exc)) from exc
        return JSONResponse({"saved": True})

    def _frame_count(query_id: str) -> int:
        return store.read("SELECT COUNT(*) FROM media WHERE query_id = ? AND kind = 'frame'",
                          (query_id,))[0][0]

    @app.get("/media/{query_id}/{kind}/{idx}")
    def media(request: Request, query_id: str, kind: str, idx: int):
        require(request)
        data = store.media(query_id, kind, idx) if kind in ("image", "frame") else None
        if data is None:
            raise HttpError(404, f"no {kind} {idx} for query {query_id}")
        return Response(data, media_type=_image_type(data))

    # ---- the lead -------------------------------------------------------------------
    def lead_page(session: Session, status: int = 200, notice: str = "") -> HTMLResponse:
        queries = store.queries()
        reviews = {q.query_id: review_query(q, settings.raters_per_query, settings.max_score_gap)
                   for q in queries}
        counts: dict[str, int] = {}
        for r in reviews.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        return render("lead.html", status, session=session, queries=queries, reviews=reviews,
                      counts=counts, report=agreement(queries), notice=notice,
                      users=store.users(), settings=settings)

    @app.get("/lead", response_class=HTMLResponse)
    def lead_get(request: Request):
        return lead_page(require(request, "lead"))

    @app.post("/lead/assign")
    async def lead_assign(request: Request):
        session = require(request, "lead")
        form = await request.form()
        check_csrf(session, form.get("csrf"))
        try:
            made = store.assign(settings.raters_per_query)
        except ValueError as exc:
            return lead_page(session, 422, f"assign: {exc}")
        return lead_page(session, notice=f"assigned {made} new rater-query pairs")

    @app.post("/lead/export")
    async def lead_export(request: Request):
        session = require(request, "lead")
        check_csrf(session, (await request.form()).get("csrf"))
        summary = export(store, settings.run_dir, settings.export_stage, settings.data_jsonl,
                         settings.raters_per_query, settings.max_score_gap)
        return lead_page(session, notice=f"exported {summary['records']} records to "
                         f"{summary['stage']} and {summary['data_jsonl']}")

    def adjudicate_page(session: Session, query_id: str, status: int = 200,
                        form: dict | None = None, errors: list | None = None) -> HTMLResponse:
        q = store.query(query_id)
        review = review_query(q, settings.raters_per_query, settings.max_score_gap)
        if form is None:
            base = q.adjudication or (q.submissions[0].labels if q.submissions else None)
            form = labels_to_form(base) if base else {}
        return render("adjudicate.html", status, session=session, q=q, task=q.task,
                      review=review, form=form, errors=errors or [],
                      n_frames=_frame_count(query_id),
                      has_image=store.media(query_id, "image", 0) is not None)

    @app.get("/adjudicate/{query_id}", response_class=HTMLResponse)
    def adjudicate_get(request: Request, query_id: str):
        session = require(request, "lead")
        try:
            return adjudicate_page(session, query_id)
        except NotFound as exc:
            raise HttpError(404, str(exc)) from exc

    @app.post("/adjudicate/{query_id}")
    async def adjudicate_post(request: Request, query_id: str):
        session = require(request, "lead")
        form = {k: str(v) for k, v in (await request.form()).items()}
        check_csrf(session, form.get("csrf"))
        try:
            q = store.query(query_id)
            labels = parse_form(form, len(q.task["responses"]), settings.max_reason_chars,
                                settings.require_reasons)
            store.adjudicate(query_id, session.user, labels, int(form.get("labels_rev") or -1))
        except NotFound as exc:
            raise HttpError(404, str(exc)) from exc
        except LabelError as exc:
            return adjudicate_page(session, query_id, 422, form, exc.problems)
        except Conflict as exc:
            return adjudicate_page(session, query_id, 409, form, [("page", str(exc))])
        return RedirectResponse("/lead", status_code=303)

    return app
