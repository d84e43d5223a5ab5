"""Fixtures of the Ray Serve tests: a live service (the reward model and the media root are
in ``tests/conftest.py``, shared with ``tests/service``; helpers: ``tests/serve/helpers.py``)."""

from __future__ import annotations

import pytest

from tests.serve.helpers import TOKEN, free_port


@pytest.fixture(scope="session")
def live_service(ray_session, reward_model_dir, media_root):
    """The reward app on a real HTTP server on 127.0.0.1 with a bearer token."""
    from ray import serve

    from mmrlhf_ray.service.config import ServeLimits, ServeRewardConfig
    from serve.app import start

    cfg = ServeRewardConfig(
        model_path=reward_model_dir,
        port=free_port(),
        app_name="test-reward",
        route_prefix="/rm",
        max_batch_size=16,
        critique_max_new_tokens=8,
        limits=ServeLimits(
            max_body_bytes=1 << 20,
            max_pixels=512 * 512,
            allowed_roots=[str(media_root / "root")],
        ),
    )
    url = start(cfg, token=TOKEN)
    yield {"url": url, "token": TOKEN, "cfg": cfg}
    serve.delete(cfg.app_name)
