"""The reward model as a Ray Serve application: HTTP (FastAPI) and handle, batched.

A thin layer over ``mmrlhf_ray.service.server`` (which holds the request models, the limits,
media resolution and the plain ``RewardScorer``). This file adds only what needs Ray:

* ``ReplicaCore`` + ``make_service(...)`` -> ``RewardService``: a Serve deployment with
  a FastAPI ingress built fresh per application (``make_api``), so its token and body
  cap travel with it (no globals). Every scored item is one call to a ``@serve.batch`` method, so the K responses of a ``/v1/compare`` and
  the items of concurrent requests share forwards; the forward runs in a worker thread
  so the event loop keeps accepting (and rejecting) requests meanwhile.
* ``_Guard``: ASGI middleware in front of the routes: body-size cap (413, before any
  parsing), optional bearer token on ``/v1/*`` (401, constant-time compare).
* exception handlers: every client mistake is a 4xx JSON ``{"error": {"field",
  "reason"}}``; only a fault of the service itself is a 5xx.
* ``build_app(cfg)`` / ``start(cfg)``: replicas or autoscaling, CPUs/GPUs, batch size
  and ``max_ongoing_requests`` from ``ServeRewardConfig``; binds ``cfg.host``
  (127.0.0.1 by default).

Routes: ``POST /v1/score``, ``POST /v1/compare``, ``GET /healthz``, ``GET /docs``,
``GET /openapi.json``. Handle methods (in-cluster, no HTTP): ``score_json(body)``,
``compare_json(body)``; they return ``{"error": ..., "status": ...}`` for bad input.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmrlhf_ray.core.signals import interrupt_point
from mmrlhf_ray.service.config import ServeLimits, ServeRewardConfig
from mmrlhf_ray.service.server import (
    RequestError,
    all_margins,
    load_scorer,
    resolve_compare_request,
    resolve_score_request,
)
from mmrlhf_ray.service.wire import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
)
from serve.bodies import declared_length, read_capped, replaying

log = logging.getLogger("mmrlhf.serve")
_ERRORS = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


def _error(status: int, field: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "reason": reason}}, status_code=status)


class _Guard:
    """Body-size cap and bearer token, checked before FastAPI parses anything."""

    def __init__(self, app, max_body_bytes: int, token: str | None):
        self.app, self.max_body_bytes, self.token = app, max_body_bytes, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = self.token
        if token and "/v1/" in scope["path"] + "/":
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.encode(), token.encode()
            ):
                resp = _error(401, "authorization", "missing or wrong bearer token")
                resp.headers["WWW-Authenticate"] = "Bearer"
                return await resp(scope, receive, send)
        limit = self.max_body_bytes
        problem = declared_length(headers.get("content-length"), limit)
        if problem:
            status = 400 if problem.startswith("not") else 413
            field = "content-length" if status == 400 else "body"
            return await _error(status, field, problem)(scope, receive, send)
        try:  # read it all (bounded) so chunked bodies are capped too
            body = await read_capped(receive, limit)
        except OverflowError as exc:
            return await _error(413, "body", str(exc))(scope, receive, send)
        if body is None:
            return None
        return await self.app(scope, replaying(body, receive), send)


def _loc_to_field(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "body":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def _on_validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid", "type": ""}
    if first.get("type") == "json_invalid":
        return _error(400, "body", f"malformed JSON: {first.get('msg')}")
    return _error(422, _loc_to_field(tuple(first.get("loc", ()))), str(first.get("msg")))


async def _on_request_error(_req: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _on_http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
    field = "body" if exc.status_code == 400 else "path"
    return _error(exc.status_code, field, f"{exc.detail} ({req.method} {req.url.path})")


async def _on_crash(req: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s", req.url.path)
    return _error(500, "", f"internal error ({type(exc).__name__})")


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def make_api(max_body_bytes: int, token: str | None) -> FastAPI:
    """A fresh FastAPI app: the guard middleware and the JSON error handlers."""
    api = FastAPI(
        title="mmrlhf reward service",
        version="1",
        description="The MM-RLHF critique reward model: critique, then score (paper Sec. 3.2).",
    )
    api.add_middleware(_Guard, max_body_bytes=max_body_bytes, token=token or None)
    api.add_exception_handler(RequestValidationError, _on_validation)
    api.add_exception_handler(RequestError, _on_request_error)
    api.add_exception_handler(StarletteHTTPException, _on_http)
    api.add_exception_handler(Exception, _on_crash)
    return api


def make_critic(cfg: ServeRewardConfig):
    """vLLM critiques when ``critique_backend=vllm`` (None: the model's own ``generate``)."""
    if cfg.critique_backend != "vllm":
        return None
    from actors.critic import VllmCritic

    return VllmCritic(
        cfg.model_path,
        cfg.critique_max_new_tokens,
        num_gpus=cfg.num_gpus,
        tensor_parallel_size=cfg.critique_tensor_parallel_size,
        dtype=cfg.critique_dtype,
        max_model_len=cfg.critique_max_model_len,
        gpu_memory_utilization=cfg.critique_gpu_memory_utilization,
    )


class ReplicaCore:
    """Everything a replica does but its HTTP routes: the scorer, batching, counters and
    the handle API. ``make_service`` adds the routes over a fresh FastAPI app."""

    def __init__(self, cfg: dict):
        interrupt_point("serve.start")  # tests: a signal while the service starts
        self.cfg = ServeRewardConfig(**{**cfg, "limits": ServeLimits(**cfg["limits"])})
        self.limits = self.cfg.limits
        self.scorer = load_scorer(
            self.cfg.model_path,
            self.cfg.max_batch_size,
            self.cfg.critique_max_new_tokens,
            self.cfg.trust_remote_code,
            critic=make_critic(self.cfg),
            forward=self.cfg.forward,
            attention=(
                self.cfg.score_dtype,
                self.cfg.attn_implementation,
                self.cfg.packed_attention,
            ),
        )
        # Ray 2.60's @serve.batch needs a replica context, which local testing mode lacks:
        # there each request is scored as one batch of its own items instead.
        try:
            serve.get_replica_context()
            self.cross_request_batching = True
        except RayServeException:
            self.cross_request_batching = False
        if self.cfg.num_gpus == 0 and self.cross_request_batching:  # own process: own threads
            import torch

            torch.set_num_threads(max(1, self.cfg.torch_threads))
        self._batched.set_max_batch_size(self.cfg.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        self.items_scored, self.batches, self.started = 0, 0, time.time()
        self.requests_seen = 0
        self.batch_sizes: list[int] = []

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _batched(self, inputs: list) -> list[tuple[float, str]]:
        """The items of every request waiting now, in one forward (off the event loop)."""
        out = await asyncio.to_thread(self.scorer.score, inputs)
        self.items_scored += len(inputs)
        self.batches += 1
        self.batch_sizes = (self.batch_sizes + [len(inputs)])[-1000:]
        return out

    async def _score_all(self, inputs: list) -> list[tuple[float, str]]:
        """Each item is one call of the batched method, so it joins whatever is waiting."""
        if not self.cross_request_batching:
            self.items_scored, self.batches = self.items_scored + len(inputs), self.batches + 1
            return await asyncio.to_thread(self.scorer.score, inputs)
        return list(await asyncio.gather(*(self._batched(i) for i in inputs)))

    async def do_score(self, req: ScoreRequest) -> ScoreResponse:
        self.requests_seen += 1  # tests: SIGTERM to `mmrlhf serve-reward` under load
        interrupt_point("serve.request", hits=self.requests_seen, hold=False)
        # Decoding (and fetching, with allow_urls) stays off the event loop.
        inputs = await asyncio.to_thread(resolve_score_request, req, self.limits)
        outs = await self._score_all(inputs)
        return ScoreResponse(
            results=[ScoreResult(score=s, critique=c) for s, c in outs], model=self.scorer.name
        )

    async def do_compare(self, req: CompareRequest) -> CompareResponse:
        inputs = await asyncio.to_thread(resolve_compare_request, req, self.limits)
        outs = await self._score_all(inputs)
        scores = [s for s, _ in outs]
        return CompareResponse(
            scores=scores,
            critiques=[c for _, c in outs],
            margins=all_margins(scores),
            model=self.scorer.name,
        )

    def health(self) -> dict:
        sizes = self.batch_sizes
        return {
            "status": "ok",
            "model": self.scorer.name,
            "items_scored": self.items_scored,
            "batches": self.batches,
            "mean_batch_size": sum(sizes) / len(sizes) if sizes else 0.0,
            "rss_mb": round(_rss_mb(), 1),
            "uptime_s": round(time.time() - self.started, 1),
        }

    # ---- handle API (in-cluster callers, no HTTP) -------------------------------------------
    async def score_json(self, body: dict) -> dict:
        return await self._call_json(body, ScoreRequest, self.do_score)

    async def compare_json(self, body: dict) -> dict:
        return await self._call_json(body, CompareRequest, self.do_compare)

    async def _call_json(self, body: dict, model, route) -> dict:
        try:
            try:
                size = len(json.dumps(body))
            except (TypeError, ValueError) as exc:
                raise RequestError("body", f"not JSON-serialisable ({exc})") from exc
            if size > self.limits.max_body_bytes:
                raise RequestError("body", f"body exceeds {self.limits.max_body_bytes} bytes", 413)
            result = await route(model.model_validate(body))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = _loc_to_field(tuple(err["loc"]))
            return {"status": 422, "error": {"field": field, "reason": err["msg"]}}
        except RequestError as exc:
            return {"status": exc.status, **exc.body()}
        return result.model_dump()


def make_service(max_body_bytes: int, token: str | None):
    """The ``RewardService`` deployment: ``ReplicaCore`` plus routes on a fresh FastAPI
    app, so the bearer token and body cap travel with the deployment (no globals)."""
    api = make_api(max_body_bytes, token)

    @serve.deployment
    @serve.ingress(api)
    class RewardService(ReplicaCore):
        """One replica: a ``RewardScorer`` behind dynamic batching, HTTP and handle."""

        @api.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS)
        async def score(self, req: ScoreRequest) -> ScoreResponse:
            """Score items independently: each gets a critique (generated unless given)
            and r(x, y, c)."""
            return await self.do_score(req)

        @api.post("/v1/compare", response_model=CompareResponse, responses=_ERRORS)
        async def compare(self, req: CompareRequest) -> CompareResponse:
            """Score K responses to one query; all pairwise margins scores[i] - scores[j]."""
            return await self.do_compare(req)

        @api.get("/healthz")
        async def healthz(self) -> dict:
            """Liveness plus counters: items scored, batches, mean batch size, RSS."""
            return self.health()

    return RewardService


def resolve_model_path(cfg: ServeRewardConfig) -> str:
    return cfg.model_path or os.path.join(cfg.run_dir, "train-reward", "model")


def build_app(cfg: ServeRewardConfig, token: str | None = None):
    """The bound Serve application for ``cfg`` (paths made absolute for the replicas)."""
    data = asdict(cfg)
    data["model_path"] = os.path.abspath(resolve_model_path(cfg))
    data["limits"]["allowed_roots"] = [os.path.abspath(r) for r in cfg.limits.allowed_roots]
    options: dict[str, Any] = {
        "max_ongoing_requests": max(cfg.max_ongoing_requests, cfg.max_batch_size + 1),
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "logging_config": {"enable_access_log": cfg.access_log},
    }
    if cfg.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = cfg.num_replicas
    service = make_service(cfg.limits.max_body_bytes, token)
    return service.options(**options).bind(data)


def read_token(cfg: ServeRewardConfig) -> str | None:
    """The bearer token from ``$<token_env>``; an error if named but unset."""
    if not cfg.token_env:
        return None
    token = os.environ.get(cfg.token_env, "")
    if not token:
        raise RuntimeError(f"token_env={cfg.token_env} but ${cfg.token_env} is empty")
    return token


def start(cfg: ServeRewardConfig, token: str | None = None) -> str:
    """Start Serve's HTTP proxy on ``cfg.host:cfg.port`` and run the app; returns its URL.

    Serve has one HTTP proxy per cluster: if one already runs, it is kept, and the URL
    returned is the one it really listens on (with a warning if it differs from cfg).
    """
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(
        build_app(cfg, token if token is not None else read_token(cfg)),
        name=cfg.app_name,
        route_prefix=cfg.route_prefix,
        blocking=False,
    )
    host, port = _proxy_address(cfg)
    if (host, port) != (cfg.host, cfg.port):
        log.warning(
            "Serve's HTTP proxy already listens on %s:%s (not %s:%s)",
            host,
            port,
            cfg.host,
            cfg.port,
        )
    return app_url(cfg, host, port)


def _proxy_address(cfg: ServeRewardConfig) -> tuple[str, int]:
    """Where the cluster's Serve HTTP proxy listens (private Ray API; cfg if unavailable)."""
    try:
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config
        return str(http.host), int(http.port)
    except Exception:  # an older/newer Ray without it: trust the config
        return cfg.host, cfg.port


def app_url(cfg: ServeRewardConfig, host: str | None = None, port: int | None = None) -> str:
    return f"http://{host or cfg.host}:{port or cfg.port}{cfg.route_prefix.rstrip('/')}"
