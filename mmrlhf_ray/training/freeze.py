"""Freezing parts of a vision-language model, as the paper does (App. G.1; pure torch).

MM-DPO and the SFT warm-up train the language model and the vision-language projector
while the vision encoder stays fixed. Where a family keeps its tower and projector is the
family layer's business (``mmrlhf_ray.models.families``): Qwen2-VL's projector is the
``merger`` inside ``model.visual``; LLaVA-OneVision and InternVL have a
``vision_tower`` and a ``multi_modal_projector``; SmolVLM a ``vision_model`` and a
``connector``. A model whose tower cannot be found is an error, never a silent no-op.
"""

from __future__ import annotations

from torch import nn

from mmrlhf_ray.models.families import family_of


def vision_tower(model: nn.Module) -> nn.Module:
    """The vision encoder of a supported model (or a wrapper holding one)."""
    return family_of(model).vision_modules(model)[0]


def _numel(p: nn.Parameter) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions report ds_numel


def freeze_vision(model: nn.Module, freeze_projector: bool = False) -> dict[str, int]:
    """Set ``requires_grad=False`` on the vision tower (and the projector if asked).

    Returns parameter counts ``{"frozen", "trainable"}``. Raises ``UnsupportedFamily``
    for a model of no known family and ``ValueError`` when the tower has no parameters.
    """
    family = family_of(model)
    projector = {id(p) for p in family.projector_parameters(model)}
    tower = [p for m in family.vision_modules(model) for p in m.parameters()]
    if not any(id(p) not in projector for p in tower):
        raise ValueError(f"freeze_vision: {family.name} model has no vision-tower parameters")
    for p in tower:
        if id(p) not in projector:
            p.requires_grad_(False)
    if freeze_projector:
        for p in family.projector_parameters(model):
            p.requires_grad_(False)
    frozen = sum(_numel(p) for p in model.parameters() if not p.requires_grad)
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    return {"frozen": frozen, "trainable": trainable}
