"""The LM head: Liger's fused linear + cross-entropy where it runs (CUDA), else chunked torch."""

import pytest
import torch

from mmrlhf_ray.models.fused_head import fused_head_applies, fused_token_logps, liger_available
from mmrlhf_ray.models.packing import chunked_token_logps, head_logps


def _case(device: str, dtype: torch.dtype):
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 1000, bias=False).to(device, dtype)
    h = torch.randn(37, 64, device=device, dtype=dtype, requires_grad=True)
    tokens = torch.randint(0, 1000, (37,), device=device)
    return head, h, tokens


def test_cpu_takes_the_chunked_torch_head():
    head, h, tokens = _case("cpu", torch.float32)
    assert not fused_head_applies(head, h) and fused_token_logps(head, h, tokens) is None
    full = head(h).log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)
    torch.testing.assert_close(head_logps(head, h, tokens, chunk=8), full)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_liger_head_equals_torch_head_on_cuda(dtype):
    """Log-probs (|logp| ~7 for 1,000 classes) and gradients: fp32 at 1e-4, bf16 at 2e-2
    (bf16 carries 3 significant digits; both paths accumulate in fp32)."""
    if not liger_available():
        pytest.skip("liger-kernel not installed (the gpu extra)")
    head, h, tokens = _case("cuda", dtype)
    assert fused_head_applies(head, h)
    fused = fused_token_logps(head, h, tokens)
    torch_path = chunked_token_logps(head, h, tokens, chunk=8)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fused, torch_path, atol=tol, rtol=tol)
    g_fused = torch.autograd.grad(fused.sum(), (h, head.weight))
    g_torch = torch.autograd.grad(torch_path.sum(), (h, head.weight))
    for a, b in zip(g_fused, g_torch, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)
