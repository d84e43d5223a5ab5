"""Fixtures of the serving tests: a tiny critique reward model, images, a live service
(helpers: ``tests/serve/helpers.py``)."""

from __future__ import annotations

import pytest

from tests.serve.helpers import TOKEN, free_port, png_bytes


@pytest.fixture(scope="session")
def reward_model_dir(tiny_models, tmp_path_factory) -> str:
    """An untrained critique reward model over the tiny Qwen2-VL policy (safetensors)."""
    from mmrlhf_ray.reward.model import build_tiny_reward_model

    out = tmp_path_factory.mktemp("serve_rm") / "model"
    return build_tiny_reward_model(tiny_models["policy"], out, seed=0)


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    """An allowed root holding one image, and a sibling dir outside it holding another."""
    base = tmp_path_factory.mktemp("media")
    (base / "root").mkdir()
    (base / "outside").mkdir()
    (base / "root" / "red.png").write_bytes(png_bytes())
    (base / "outside" / "secret.png").write_bytes(png_bytes((0, 0, 255)))
    (base / "root" / "link.png").symlink_to(base / "outside" / "secret.png")
    return base


@pytest.fixture(scope="session")
def live_service(ray_session, reward_model_dir, media_root):
    """The reward app on a real HTTP server on 127.0.0.1 with a bearer token."""
    from ray import serve

    from mmrlhf_ray.service.server import ServeLimits, ServeRewardConfig
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
