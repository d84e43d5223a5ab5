"""The tiny open_clip model: built offline from a JSON config, reloaded bit-identically."""

import numpy as np
from PIL import Image

from mmrlhf_ray.models.clip import (
    TINY_CLIP_NAME,
    WEIGHTS_FILE,
    build_tiny_clip,
    embed_images,
    load_clip,
)


def test_tiny_clip_builds_saves_and_reloads(tmp_path):
    import torch

    path = build_tiny_clip(tmp_path / "clip", seed=3)
    assert (tmp_path / "clip" / f"{TINY_CLIP_NAME}.json").exists()
    assert (tmp_path / "clip" / WEIGHTS_FILE).exists()
    model, preprocess = load_clip(TINY_CLIP_NAME, model_dir=path)
    same, _ = load_clip(TINY_CLIP_NAME, seed=3)  # same seed, no file: the same weights
    other, _ = load_clip(TINY_CLIP_NAME, seed=4)
    red, blue = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    pixels = torch.stack([preprocess(red), preprocess(blue)])
    emb = embed_images(model, pixels)
    assert emb.shape == (2, 128)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # unit vectors
    assert np.array_equal(emb, embed_images(same, pixels))
    assert not np.allclose(emb, embed_images(other, pixels))
    assert emb[0] @ emb[1] < 0.9999  # different images, different embeddings
