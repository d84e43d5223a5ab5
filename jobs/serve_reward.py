"""Serve the critique reward model over HTTP (and Serve handles) with Ray Serve.

Reads the reward model (``model_path``, default ``<run_dir>/train-reward/model``;
safetensors only) and starts the ``RewardService`` app of ``serve/app.py`` on
``host:port`` (127.0.0.1:8000 by default); the manifest records its URL and app name
(``mmrlhf score`` reads them). Two modes:

* ``detach=false``: serve until Ctrl-C, then delete the app;
* ``detach=true``: return once the app is healthy, leaving it in the cluster (for the
  pipeline and ``mmrlhf score``); ``harness.service.stop_service(run_dir)`` deletes it later.
* unset (default): detach when the Ray runtime outlives this call (``$RAY_ADDRESS``
  set, or Ray already started by the caller such as ``mmrlhf pipeline``), else block,
  since a local runtime started here dies with this process.

    ray job submit --working-dir . -- python jobs/serve_reward.py --config configs/serve-reward.yaml detach=true
    mmrlhf serve-reward run_dir=runs/demo
    RM_TOKEN=secret mmrlhf serve-reward token_env=RM_TOKEN port=8100
"""

import os
import sys
import time
from pathlib import Path

from harness.service import stop_service
from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import config_to_dict
from mmrlhf_ray.core.stage import StageDir, StageInputError
from mmrlhf_ray.service.client import ServiceUnavailable
from mmrlhf_ray.service.config import ServeRewardConfig


def _healthy(url: str, token: str | None) -> dict | None:
    from serve.client import HttpRewardClient

    try:
        return HttpRewardClient(url, token, timeout_s=5).healthz()
    except ServiceUnavailable:
        return None


def should_detach(cfg: ServeRewardConfig) -> bool:
    """``detach`` as set, or when unset (auto): return at once if the Ray runtime outlives
    this call (joined via ``$RAY_ADDRESS``, or already started by the caller, e.g. the
    pipeline); block if this call starts its own local runtime (it dies with us)."""
    if cfg.detach is not None:
        return cfg.detach
    import ray

    return ray.is_initialized() or bool(os.environ.get("RAY_ADDRESS"))


def run(cfg: ServeRewardConfig) -> dict:
    """The stage: start (or find healthy) the reward service; its manifest has the URL."""
    from harness.runtime import init_ray
    from serve.app import read_token, resolve_model_path, start

    out = StageDir(cfg.run_dir, "serve-reward")
    token, model_path, detach = read_token(cfg), resolve_model_path(cfg), should_detach(cfg)
    previous = (out.read_manifest() or {}).get("url")
    if detach and out.is_done(config_to_dict(cfg)) and previous and _healthy(previous, token):
        print(f"serve-reward: already serving at {previous}")
        return out.read_manifest()
    if not Path(model_path).is_dir():
        raise StageInputError(
            f"serve-reward: no reward model at {model_path}: run `mmrlhf "
            f"train-reward run_dir={cfg.run_dir}` or set model_path="
        )
    out.begin(config_to_dict(cfg), inputs={"model_path": str(Path(model_path).resolve())})
    init_ray()
    t0 = time.time()
    try:
        url = start(cfg, token)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM while starting: leave no half-made app
        _delete_app(cfg.app_name)
        raise
    health = _healthy(url, token)
    if health is None:
        raise SystemExit(f"serve-reward: the app started but {url}/healthz does not answer")
    manifest = out.finish(0, 0, 0, url=url, app_name=cfg.app_name, model=health["model"])
    print(
        f"serve-reward: {health['model']} serving at {url} (docs {url}/docs), "
        f"ready in {time.time() - t0:.1f}s" + ("" if detach else "; Ctrl-C stops it")
    )
    if detach:
        return manifest
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: answer what was accepted, then stop
        print("serve-reward: stopping: answering accepted requests first", flush=True)
        stop_service(cfg.run_dir)
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("serve-reward", ServeRewardConfig, argv, __doc__))
    return 0


def _delete_app(app_name: str) -> None:
    """Delete ``app_name`` without waiting (its replicas may still be starting)."""
    from ray import serve

    try:
        serve.delete(app_name, _blocking=False)
    except Exception as exc:  # Serve itself not up yet: nothing to delete
        print(f"serve-reward: could not delete {app_name}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
