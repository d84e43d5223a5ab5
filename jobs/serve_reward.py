"""Serve the critique reward model over HTTP (and Serve handles) with Ray Serve.

Reads the reward model (``model_path``, default ``<run_dir>/train-reward/model``;
safetensors only) and starts the ``RewardService`` app of ``serve/app.py`` on
``host:port`` (127.0.0.1:8000 by default). Two modes:

* default: serve until Ctrl-C, then delete the app;
* ``detach=true``: return once the app is healthy, leaving it in the cluster (for the
  pipeline and ``mmrlhf score``); the manifest records its URL and app name. Detach
  only outlives this process on a running cluster (``$RAY_ADDRESS``), not on the
  local runtime this script would start itself.

    ray job submit --working-dir . -- python jobs/serve_reward.py --config configs/serve-reward.yaml detach=true
    mmrlhf serve-reward run_dir=runs/demo
    RM_TOKEN=secret mmrlhf serve-reward token_env=RM_TOKEN port=8100
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `ray job submit`

from mmrlhf_ray.cli import parse_stage_args
from mmrlhf_ray.config import config_to_dict
from mmrlhf_ray.scoring import ServiceUnavailable
from mmrlhf_ray.serving import ServeRewardConfig
from mmrlhf_ray.stage import StageDir


def _healthy(url: str, token: str | None) -> dict | None:
    from serve.client import HttpRewardClient

    try:
        return HttpRewardClient(url, token, timeout_s=5).healthz()
    except ServiceUnavailable:
        return None


def main(argv=None) -> int:
    cfg = parse_stage_args("serve-reward", ServeRewardConfig, argv, __doc__)
    from actors.runtime import init_ray
    from serve.app import read_token, resolve_model_path, start

    out = StageDir(cfg.run_dir, "serve-reward")
    token, model_path = read_token(cfg), resolve_model_path(cfg)
    previous = (out.read_manifest() or {}).get("url")
    if cfg.detach and out.is_done(config_to_dict(cfg)) and previous and _healthy(previous, token):
        print(f"serve-reward: already serving at {previous}")
        return 0
    if not Path(model_path).is_dir():
        raise SystemExit(
            f"serve-reward: no reward model at {model_path}: run `mmrlhf "
            f"train-reward run_dir={cfg.run_dir}` or set model_path="
        )
    out.begin(config_to_dict(cfg), inputs={"model_path": str(Path(model_path).resolve())})
    init_ray()
    t0 = time.time()
    url = start(cfg, token)
    health = _healthy(url, token)
    if health is None:
        raise SystemExit(f"serve-reward: the app started but {url}/healthz does not answer")
    out.finish(0, 0, 0, url=url, app_name=cfg.app_name, model=health["model"])
    print(
        f"serve-reward: {health['model']} serving at {url} (docs {url}/docs), "
        f"ready in {time.time() - t0:.1f}s"
    )
    if cfg.detach:
        return 0
    from ray import serve

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(cfg.app_name)
        manifest = out.read_manifest() or {}
        out.write_manifest({**manifest, "status": "stopped", "stopped": time.time()})
        print(f"serve-reward: stopped {cfg.app_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
