"""The CLIP image embedder used by curation: a tiny open_clip model offline, ViT-B-32 on GPUs.

Curation (paper Sec. 2.2) only needs an image embedding that groups similar images, so
the CPU default is a tiny open_clip CLIP built from a JSON config with seeded random
weights; the GPU profile loads the ``clip-vit-base-patch32``-equivalent ``ViT-B-32``
weights from a path. Both go through :func:`load_clip`, so no code path differs.

A model directory holds ``<name>.json`` (an open_clip model config, registered with
``open_clip.add_model_config``) and, optionally, ``open_clip_model.safetensors``.
Import this module by its full path (``mmrlhf_ray.models.clip``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TINY_CLIP_NAME = "mmrlhf-tiny-clip"
WEIGHTS_FILE = "open_clip_model.safetensors"

# A 2-layer, 64-wide ViT on 64 px images (the shapes world's size) and a 1-layer text
# tower (open_clip's CLIP needs one; curation never uses it).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
}


def write_clip_config(
    out_dir: str | Path, name: str = TINY_CLIP_NAME, config: dict[str, Any] | None = None
) -> Path:
    """Write ``<out_dir>/<name>.json`` (the tiny config by default); returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(config or TINY_CLIP_CONFIG, indent=2))
    return path


def _register(name: str, model_dir: str | Path | None) -> None:
    """Make ``name`` known to open_clip (from ``model_dir`` or the built-in tiny config)."""
    import open_clip

    if model_dir is not None and (Path(model_dir) / f"{name}.json").exists():
        open_clip.add_model_config(str(Path(model_dir) / f"{name}.json"))
    elif name not in open_clip.list_models():
        if name != TINY_CLIP_NAME:
            raise ValueError(
                f"model.name: unknown open_clip model {name!r} and no "
                f"{name}.json in model.path={model_dir!r}"
            )
        import tempfile

        open_clip.add_model_config(str(write_clip_config(tempfile.mkdtemp(), name)))


def _load_weights(model: Any, weights: str | Path) -> None:
    """Load a state dict from safetensors (preferred) or a torch file (weights only)."""
    import torch

    path = Path(weights)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    visual_missing = [k for k in missing if k.startswith("visual.")]
    if visual_missing:
        raise ValueError(f"model.weights: {path} lacks vision weights, e.g. {visual_missing[:3]}")


def load_clip(
    name: str = TINY_CLIP_NAME,
    model_dir: str | Path | None = None,
    weights: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
):
    """An open_clip model in eval mode and its image preprocessing transform.

    ``weights`` (or ``<model_dir>/open_clip_model.safetensors`` when present) are loaded;
    without weights the model keeps random weights drawn from ``seed``, so two loads
    with the same seed embed identically (the offline default).
    Returns ``(model, preprocess)``; ``preprocess(PIL image) -> (3, H, W)`` tensor.
    """
    import open_clip
    import torch

    _register(name, model_dir)
    if weights is None and model_dir is not None and (Path(model_dir) / WEIGHTS_FILE).exists():
        weights = Path(model_dir) / WEIGHTS_FILE
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, device=device)
    if weights:
        _load_weights(model, weights)
    model.eval()
    size = model.visual.image_size
    preprocess = open_clip.image_transform(size, is_train=False)
    return model, preprocess


def build_tiny_clip(out_dir: str | Path, seed: int = 0) -> str:
    """Build the tiny CLIP offline into ``out_dir`` (config + safetensors); returns the dir."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    write_clip_config(out)
    model, _ = load_clip(TINY_CLIP_NAME, seed=seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    return str(out)


def embed_images(model: Any, pixels: Any) -> np.ndarray:
    """L2-normalised image embeddings, float32 ``(N, embed_dim)``, for a ``(N,3,H,W)`` batch."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        feats = model.encode_image(pixels.to(device))
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
    return feats.cpu().numpy()
