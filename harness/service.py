"""The scoring service's life in a Ray cluster after `serve-reward` started it detached:
the app recorded in ``<run_dir>/serve-reward``'s manifest, stopped by the pipeline or by
``serve-reward`` itself.
"""

from __future__ import annotations

import time

from mmrlhf_ray.core.stage import StageDir


def stop_service(run_dir: str) -> bool:
    """Delete the app recorded in ``<run_dir>/serve-reward``'s manifest; mark it stopped.

    Returns False when there is nothing to stop (no manifest, no Ray, app gone).
    """
    out = StageDir(run_dir, "serve-reward")
    manifest = out.read_manifest() or {}
    if manifest.get("status") != "done" or not manifest.get("app_name"):
        return False
    import ray
    from ray import serve

    if not ray.is_initialized():
        return False
    try:
        serve.delete(manifest["app_name"])
    except Exception as exc:  # Serve not running any more: nothing to delete
        print(f"serve-reward: could not delete {manifest['app_name']}: {exc}")
        return False
    out.write_manifest({**manifest, "status": "stopped", "stopped": time.time()})
    print(f"serve-reward: stopped {manifest['app_name']} ({manifest.get('url')})")
    return True
