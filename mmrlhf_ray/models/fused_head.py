"""The response-only LM head through Liger Kernel's fused linear + cross-entropy (CUDA).

``log p(token | h) = -CE(h @ W^T + b, token)``: Liger computes it chunk by chunk in
Triton, never holding the (T, V) logits, and (``reduction="none"``) recomputes them in
backward to fold in each token's upstream gradient. It runs where it can: on CUDA, with
``liger-kernel`` installed (the ``gpu`` extra), for a plain ``nn.Linear`` head whose
weight is whole (under ZeRO-3 the weight is a partition outside the head's forward: the
chunked torch head is used there). Everywhere else ``fused_token_logps`` returns None
and the caller takes ``packing.chunked_token_logps``.

    logps = fused_token_logps(lm_head, hidden, tokens)   # (T,) fp32, or None
"""

from __future__ import annotations

import os

import torch

_DISABLE = "MMRLHF_NO_LIGER"  # set to 1 to force the torch head (the GPU check compares both)


def liger_available() -> bool:
    """liger-kernel imports (it needs Triton; it is only used on CUDA)."""
    try:
        import liger_kernel.transformers.functional  # noqa: F401
    except Exception:  # ImportError, or Triton failing to initialise
        return False
    return True


def fused_head_applies(lm_head, hidden: torch.Tensor) -> bool:
    """Whether the Liger head runs for this call (see the module docstring)."""
    weight = getattr(lm_head, "weight", None)
    return (
        hidden.device.type == "cuda"
        and os.environ.get(_DISABLE, "") not in ("1", "true")
        and isinstance(lm_head, torch.nn.Linear)
        and weight is not None
        and getattr(weight, "ds_status", None) is None  # not a ZeRO-3 partition
        and weight.numel() > 0
        and liger_available()
    )


def fused_token_logps(lm_head, hidden: torch.Tensor, tokens: torch.Tensor):
    """Per-row log-prob of ``tokens`` under ``lm_head`` (T,) in fp32, or None where the
    fused head does not apply."""
    if hidden.shape[0] == 0 or not fused_head_applies(lm_head, hidden):
        return None
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    nll = liger_fused_linear_cross_entropy(
        hidden.contiguous(),
        lm_head.weight,
        tokens,
        bias=lm_head.bias,
        reduction="none",
        accum_dtype=torch.float32,
    )
    return -nll.float()
