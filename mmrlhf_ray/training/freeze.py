"""Freezing parts of a vision-language model (pure torch).

MM-DPO and the SFT warm-up train the language model and the vision-language projector
while the vision encoder stays fixed (the paper freezes the vision tower). In Qwen2-VL
the encoder is ``model.visual`` (``model.model.visual`` in transformers 5) and the
projector is its ``merger``.
"""

from __future__ import annotations

from torch import nn


def vision_tower(model: nn.Module) -> nn.Module | None:
    """The vision encoder of a Qwen2-VL-like model (or a wrapper holding one), else None."""
    for path in (
        "visual",
        "model.visual",
        "module.visual",
        "module.model.visual",
        "policy.model.visual",
        "backbone.model.visual",
    ):
        node: object = model
        for attr in path.split("."):
            node = getattr(node, attr, None)
            if node is None:
                break
        if isinstance(node, nn.Module):
            return node
    return None


def _numel(p: nn.Parameter) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions report ds_numel


def freeze_vision(model: nn.Module, freeze_projector: bool = False) -> dict[str, int]:
    """Set ``requires_grad=False`` on the vision tower (and the merger if asked).

    Returns parameter counts ``{"frozen", "trainable"}``. A model without a vision
    tower is left as is (frozen = 0).
    """
    visual = vision_tower(model)
    if visual is not None:
        merger = getattr(visual, "merger", None)
        projector = {id(p) for p in merger.parameters()} if merger is not None else set()
        for p in visual.parameters():
            if freeze_projector or id(p) not in projector:
                p.requires_grad_(False)
    frozen = sum(_numel(p) for p in model.parameters() if not p.requires_grad)
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    return {"frozen": frozen, "trainable": trainable}
