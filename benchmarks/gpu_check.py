"""GPU check of the packed forward (issue 25): block-sparse vs dense vs grouped vs per pair.

One MM-DPO step (policy forward + backward, frozen vision tower, reference log-probs
precomputed for ours) over the 6 pairs of each query (K = 4 responses), on a random
Qwen2-VL of the paper's widths cut to a few layers (text: Qwen2-VL-7B's hidden 3,584,
28 heads / 4 KV heads, MLP 18,944, vocabulary 152,064, ``--layers`` 4; vision: its
1,280-wide tower, ``--vision-layers`` 4), bf16, at the paper's shapes:

* ``mid``: a 896 px image (1,024 visual tokens) + 64 text tokens; responses 100-1,000;
* ``long``: a 1,792 px image (4,096 visual tokens) + 64 text tokens; responses 500-2,000.

Variants, each timed in this process after one warm-up step on the same batch:
``packed_flex`` (one row per query, FlexAttention BlockMask, Liger head when installed),
``packed_flex_torch_head`` (the same with the chunked torch LM head), ``packed_dense``
(the same row, dense L x L mask through sdpa), ``grouped`` (K rows per query, vision once
per query), ``per_pair`` (TRL ``DPOTrainer``'s layout for vision data: every pair's
chosen and rejected as two sequences each with its own image, the policy forward +
backward, and a second, reference model run forward every step, since TRL refuses
precomputed reference log-probs for vision datasets). TRL itself is not run here: a bare
GPU box has no trl / accelerate / datasets / pyarrow; ``benchmarks/dpo_vs_trl.py``
shows TRL's loss equals ours on the same pairs (1e-6), and its Trainer only adds to the
per-pair cost, so the ratio to ``per_pair`` understates the ratio to TRL.

Also compared (no_grad, same weights): the log-probs of every variant against
``grouped``, flex against dense, Liger against the torch head, and the MM-DPO gradient of
flex against dense (FlexAttention's own backward kernel). Needs torch, triton and
transformers only (liger-kernel optional: ``pip install --no-deps liger_kernel-0.8.5-*.whl``).
Ends with one JSON line.

    python -m benchmarks.gpu_check                 # CUDA, bf16, paper shapes (~5-10 min)
    python -m benchmarks.gpu_check --shapes mid    # one shape
    python -m benchmarks.gpu_check --tiny          # CPU, fp32, tiny shapes (tests run it)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mmrlhf_ray.dpo.losses import mm_dpo_loss
from mmrlhf_ray.models import attention
from mmrlhf_ray.models.encoding import sequence_logps
from mmrlhf_ray.models.families import family_of
from mmrlhf_ray.models.fused_head import fused_head_applies
from mmrlhf_ray.models.packing import PackedQuery, item_logps, pack_queries

ROOT = Path(__file__).resolve().parents[1]

K = 4
PAIRS = [(a, b) for a in range(K) for b in range(a + 1, K)]
VARIANTS = ("packed_flex", "packed_flex_torch_head", "packed_dense", "grouped", "per_pair")
PAPER = dict(hidden=3584, heads=28, kv_heads=4, mlp=18944, vocab=152064, vision=1280)
TINY = dict(hidden=64, heads=4, kv_heads=2, mlp=128, vocab=512, vision=32)
# shape: (image side in patches of 14 px, text tokens, response lengths of the K responses)
SHAPES = {"mid": (64, 64, (100, 400, 700, 1000)), "long": (128, 64, (500, 1000, 1500, 2000))}
TINY_SHAPE = (8, 6, (3, 9, 14, 20))
SPECIAL = 6  # the last ids of the vocabulary: pad, vision start/end, image pad, ...


@dataclass
class Query:
    prompt: torch.Tensor  # (P,) ids
    types: torch.Tensor  # (P,) 0 text, 1 image
    media: dict  # pixel_values, image_grid_thw
    responses: list[torch.Tensor]


def build_model(width: dict, layers: int, vision_layers: int, dtype, device):
    """A random Qwen2-VL of ``width`` (initialised on ``device``)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    v = width["vocab"]
    half = width["hidden"] // width["heads"] // 2
    section = [half // 4, (half - half // 4) // 2]
    section.append(half - sum(section))
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=v,
            hidden_size=width["hidden"],
            intermediate_size=width["mlp"],
            num_hidden_layers=layers,
            num_attention_heads=width["heads"],
            num_key_value_heads=width["kv_heads"],
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": section},
            tie_word_embeddings=False,
            pad_token_id=v - 1,
            bos_token_id=v - 1,
            eos_token_id=v - 6,
        ),
        vision_config=dict(
            depth=vision_layers,
            embed_dim=width["vision"],
            num_heads=max(2, width["vision"] // 80),
            hidden_size=width["hidden"],
            mlp_ratio=4,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=v - 4,
        video_token_id=v - 5,
        vision_start_token_id=v - 2,
        vision_end_token_id=v - 3,
        tie_word_embeddings=False,
        pad_token_id=v - 1,
        bos_token_id=v - 1,
        eos_token_id=v - 6,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(config)
    model = model.to(dtype).eval()  # eval: no dropout (FlexAttention refuses dropout)
    family_of(model).vision_modules(model)[0].requires_grad_(False)  # frozen tower
    return model


def make_query(model, side: int, n_text: int, lengths, seed: int, dtype, device) -> Query:
    """Random ids around one image of ``side`` x ``side`` patches; K responses."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    v = cfg.text_config.vocab_size - SPECIAL
    n_image = side * side // 4
    half = n_text // 2
    prompt = torch.cat(
        [
            torch.randint(0, v, (half,), generator=g),
            torch.tensor([cfg.vision_start_token_id]),
            torch.full((n_image,), cfg.image_token_id),
            torch.tensor([cfg.vision_end_token_id]),
            torch.randint(0, v, (n_text - half,), generator=g),
        ]
    )
    types = (prompt == cfg.image_token_id).long()
    patch = 3 * 2 * 14 * 14
    media = {
        "pixel_values": torch.randn(side * side, patch, generator=g).to(device, dtype),
        "image_grid_thw": torch.tensor([[1, side, side]], device=device),
    }
    responses = [torch.randint(0, v, (n,), generator=g) for n in lengths]
    return Query(prompt, types, media, responses)  # ids on the CPU (packing), media on device


def packed(model, queries: list[Query], kind: str) -> torch.Tensor:
    """Per-response log-probs (Q * K,), one packed row per query."""
    items = []
    for q in queries:
        labels = [torch.cat([torch.full_like(q.prompt, -100), r]) for r in q.responses]
        pq = [(torch.cat([q.prompt, r]), lab) for r, lab in zip(q.responses, labels, strict=True)]
        items.append(PackedQuery(q.prompt, q.types, q.media, pq))
    pad = model.config.text_config.pad_token_id
    rows = pack_queries(items, pad).to(model.device)
    return item_logps(model, rows, attention=kind)[0]


def _pad_rows(seqs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], pad: int):
    width = max(int(s.numel()) for s, _, _ in seqs)

    def fill(t, value):
        return torch.nn.functional.pad(t, (0, width - t.numel()), value=value)

    ids = torch.stack([fill(s, pad) for s, _, _ in seqs])
    labels = torch.stack([fill(lab, -100) for _, lab, _ in seqs])
    types = torch.stack([fill(t, 0) for _, _, t in seqs])
    mask = torch.stack([fill(torch.ones_like(s), 0) for s, _, _ in seqs])
    return ids, labels, types, mask


def rows_logps(model, queries: list[Query], per_query: list[list[int]], vision_per_row: bool):
    """Log-probs of padded rows ``prompt + response`` (``per_query[q]``: response indices):
    the vision tower once per query (grouped) or once per row (per pair, as TRL)."""
    seqs, row_query, media = [], [], []
    for qi, (q, picks) in enumerate(zip(queries, per_query, strict=True)):
        for i in picks:
            r = q.responses[i]
            lab = torch.cat([torch.full_like(q.prompt, -100), r])
            seqs.append((torch.cat([q.prompt, r]), lab, torch.cat([q.types, torch.zeros_like(r)])))
            row_query.append(len(media) if vision_per_row else qi)
            if vision_per_row:
                media.append(q.media)
        if not vision_per_row:
            media.append(q.media)
    padded = _pad_rows(seqs, model.config.text_config.pad_token_id)
    ids, labels, types, mask = (t.to(model.device) for t in padded)
    extra = family_of(model).grouped_inputs(model, media, row_query, types)
    out = model(input_ids=ids, attention_mask=mask, use_cache=False, **extra)
    return sequence_logps(out.logits, labels)[0]


def _loss(pol_c, pol_r, ref_c, ref_r) -> torch.Tensor:
    delta = torch.ones_like(pol_c)
    return mm_dpo_loss(pol_c, pol_r, ref_c, ref_r, delta)[0].mean()


def step(variant: str, model, reference, queries: list[Query], ref: torch.Tensor) -> torch.Tensor:
    """One MM-DPO forward + backward of ``variant``; returns the loss."""
    ci = torch.tensor([q * K + a for q in range(len(queries)) for a, _ in PAIRS])
    ri = torch.tensor([q * K + b for q in range(len(queries)) for _, b in PAIRS])
    if variant == "per_pair":  # 2 sequences per pair, image each; reference online
        picks = [[i for pair in PAIRS for i in pair] for _ in queries]
        logps = rows_logps(model, queries, picks, vision_per_row=True)
        with torch.no_grad():
            ref_rows = rows_logps(reference, queries, picks, vision_per_row=True)
        loss = _loss(logps[0::2], logps[1::2], ref_rows[0::2], ref_rows[1::2])
    else:
        if variant == "grouped":
            logps = rows_logps(model, queries, [list(range(K))] * len(queries), False)
        else:
            logps = packed(model, queries, "dense" if variant == "packed_dense" else "flex")
        loss = _loss(logps[ci], logps[ri], ref[ci], ref[ri])
    loss.backward()
    model.zero_grad(set_to_none=True)
    return loss.detach()


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_variant(variant, model, queries, ref, steps: int, device) -> dict:
    """Pairs/s and peak memory of ``variant`` (one warm-up step, then ``steps``)."""
    cuda = torch.device(device).type == "cuda"
    reference = copy.deepcopy(model).requires_grad_(False) if variant == "per_pair" else None
    os.environ["MMRLHF_NO_LIGER"] = "1" if variant == "packed_flex_torch_head" else ""
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        step(variant, model, reference, queries, ref)  # warm-up: compiles FlexAttention
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            loss = step(variant, model, reference, queries, ref)
        _sync(device)
        seconds = (time.perf_counter() - t) / steps
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        pairs = len(PAIRS) * len(queries)
        return {
            "pairs_per_s": round(pairs / seconds, 3),
            "step_s": round(seconds, 4),
            "peak_gib": None if peak is None else round(peak, 2),
            "loss": round(float(loss), 5),
        }
    except torch.OutOfMemoryError as err:
        return {"error": f"out of memory: {str(err).splitlines()[0][:160]}"}
    finally:
        os.environ["MMRLHF_NO_LIGER"] = ""
        del reference
        if cuda:
            torch.cuda.empty_cache()


def compare_logps(model, queries: list[Query]) -> dict:
    """Max |diff| of each variant's per-response log-probs against grouped (no_grad)."""
    with torch.no_grad():
        grouped = rows_logps(model, queries, [list(range(K))] * len(queries), False).float()
        flex = packed(model, queries, "flex").float()
        dense = packed(model, queries, "dense").float()
        os.environ["MMRLHF_NO_LIGER"] = "1"
        torch_head = packed(model, queries, "flex").float()
        os.environ["MMRLHF_NO_LIGER"] = ""

    def diff(a, b):
        return round(float((a - b).abs().max()), 6)

    return {
        "logps_scale": round(float(grouped.abs().max()), 3),
        "flex_vs_grouped": diff(flex, grouped),
        "dense_vs_grouped": diff(dense, grouped),
        "flex_vs_dense": diff(flex, dense),
        "liger_vs_torch_head": diff(flex, torch_head),
    }


def compare_gradients(model, queries: list[Query], ref: torch.Tensor) -> dict:
    """Relative L2 difference of the MM-DPO gradient, flex vs dense (every trained param)."""
    params = [p for p in model.parameters() if p.requires_grad]
    ci = torch.tensor([q * K + a for q in range(len(queries)) for a, _ in PAIRS])
    ri = torch.tensor([q * K + b for q in range(len(queries)) for _, b in PAIRS])
    grads = {}
    for kind in ("dense", "flex"):
        logps = packed(model, queries, kind)
        loss = _loss(logps[ci], logps[ri], ref[ci], ref[ri])
        grads[kind] = torch.autograd.grad(loss, params)
    num = sum(
        float((a.float() - b.float()).pow(2).sum()) for a, b in zip(*grads.values(), strict=True)
    )
    den = sum(float(b.float().pow(2).sum()) for b in grads["dense"])
    return {"grad_rel_l2_flex_vs_dense": round((num / max(den, 1e-30)) ** 0.5, 6)}


def run_shape(model, name: str, shape, args, device, dtype) -> dict:
    side, n_text, lengths = shape
    queries = [
        make_query(model, side, n_text, lengths, s, dtype, device) for s in range(args.queries)
    ]
    with torch.no_grad():
        logps = packed(model, queries, "dense").float()
    # a fixed reference != policy: log-ratios h of 0.1-0.6 per pair, the loss below log 2
    ref = logps + 0.2 * torch.arange(logps.numel(), device=logps.device).remainder(K)
    out: dict = {
        "prompt_tokens": int(queries[0].prompt.numel()),
        "response_tokens": list(lengths),
        "packed_tokens_per_query": int(queries[0].prompt.numel()) + sum(lengths),
    }
    out.update(compare_logps(model, queries))
    out.update(compare_gradients(model, queries, ref))
    for v in args.variants:
        out[v] = time_variant(v, model, queries, ref, args.steps, device)
        print(name, v, json.dumps(out[v]), flush=True)
    return out


def summary(results: dict) -> dict:
    """Ratios of ``packed_flex`` against the TRL layout (``per_pair``) and the others."""
    ratios = {}
    for name, res in results.items():
        best = res.get("packed_flex", {})
        for other in ("per_pair", "grouped", "packed_dense"):
            o = res.get(other, {})
            if "pairs_per_s" in best and "pairs_per_s" in o:
                ratios[f"{name}_flex_vs_{other}_pairs"] = round(
                    best["pairs_per_s"] / o["pairs_per_s"], 3
                )
                if best.get("peak_gib") and o.get("peak_gib"):
                    ratios[f"{name}_flex_vs_{other}_memory"] = round(
                        best["peak_gib"] / o["peak_gib"], 3
                    )
    return ratios


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU-sized model and shapes (fp32)")
    ap.add_argument("--shapes", default="mid,long", help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--layers", type=int, default=4, help="LLM layers of the 7B-wide model")
    ap.add_argument("--vision-layers", type=int, default=4, help="vision tower layers")
    ap.add_argument("--queries", type=int, default=1, help="queries (6 pairs each) per step")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json-out", default="", help="also write the JSON line here")
    args = ap.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        ap.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    block, liger_env = attention.BLOCK, os.environ.get("MMRLHF_NO_LIGER")
    try:
        if args.tiny:
            attention.BLOCK = 16  # several tiles per row at tiny lengths
            model = build_model(TINY, 2, 1, dtype, device)
            shapes = {"tiny": TINY_SHAPE}
        else:
            model = build_model(PAPER, args.layers, args.vision_layers, dtype, device)
            shapes = {s: SHAPES[s] for s in args.shapes.split(",")}
        results = {
            n: run_shape(model, n, shape, args, device, dtype) for n, shape in shapes.items()
        }
    finally:
        attention.BLOCK = block
        if liger_env is None:
            os.environ.pop("MMRLHF_NO_LIGER", None)
        else:
            os.environ["MMRLHF_NO_LIGER"] = liger_env
    head = model.get_output_embeddings()
    line = {
        "check": "gpu_check",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "layers": 2 if args.tiny else args.layers,
        "liger_head": fused_head_applies(head, torch.zeros(1, device=device)),
        "queries_per_step": args.queries,
        "shapes": results,
        "ratios": summary(results),
    }
    text = json.dumps(line)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return line


if __name__ == "__main__":
    main()
