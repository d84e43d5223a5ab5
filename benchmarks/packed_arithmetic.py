"""The arithmetic per query of one MM-DPO step: TRL, grouped, packed-dense, packed-block-sparse.

Prints the two tables of docs/BENCHMARKS.md "Packed forward at GPU scale (issue 25)": LLM
token-passes, attended (q, k) pairs per layer and step FLOPs per query (K = 4, 6 pairs) at
Qwen2-VL-7B's sizes, and the same for ``benchmarks/gpu_check.py``'s 4-layer model and shapes.
Forward + backward = 3 forwards; TRL adds a reference forward and encodes the image per
sequence per model; ours precompute the reference and encode it once.

    python -m benchmarks.packed_arithmetic
"""

from __future__ import annotations

D, V = 3584, 152064  # Qwen2-VL-7B text hidden and vocabulary
BODY, VISION = 6.53e9, 0.675e9  # non-embedding LLM and vision-tower parameters
K = 4
PAIRS = [(a, b) for a in range(K) for b in range(a + 1, K)]


def step_flops(p: int, vis: int, lengths, layers: int = 28, vision_layers: int = 32) -> dict:
    """FLOPs and counts per query: ``p`` prompt tokens (``vis`` visual), K response lengths."""
    att = 4 * D * layers  # per attended pair, forward
    tok = 2 * BODY * layers / 28  # per position, forward
    head = 2 * D * V  # per LM-head position, forward
    vpass = 2 * VISION * vision_layers / 32 * 4 * vis  # one vision forward (4 patches/token)

    def row(n: int, heads: int) -> float:  # forward of a causal row of n positions
        return n * tok + heads * head + n * n / 2 * att

    trl = dict(tokens=0.0, pairs=0.0, flops=0.0)
    for a, b in PAIRS:
        w = p + max(lengths[a], lengths[b])  # chosen and rejected padded together
        trl["tokens"] += 2 * 2 * w
        trl["pairs"] += 2 * 2 * w * w / 2
        trl["flops"] += (3 + 1) * 2 * row(w, w) + 2 * 2 * vpass
    w = p + max(lengths)
    grouped = dict(tokens=K * w, pairs=K * w * w / 2, flops=3 * K * row(w, w) + vpass)
    n = p + sum(lengths)
    sparse = p * p / 2 + sum(r * p + r * r / 2 for r in lengths)
    linear = n * tok + sum(lengths) * head
    dense = dict(tokens=n, pairs=n * n, flops=3 * (linear + n * n * att) + vpass)
    block = dict(tokens=n, pairs=sparse, flops=3 * (linear + sparse * att) + vpass)
    return {"TRL": trl, "grouped": grouped, "packed-dense": dense, "packed-block-sparse": block}


def main() -> None:
    print("| prompt P (visual) | response r | variant | LLM token-passes | attended (q,k) pairs "
          "| step TFLOPs | TRL / variant |")  # fmt: skip
    print("|---" * 7 + "|")
    for p, vis, r in ((300, 256, 100), (1100, 1024, 500), (2000, 1900, 1000),
                      (7000, 6900, 2000), (7000, 6900, 100)):  # fmt: skip
        res = step_flops(p, vis, (r,) * K)
        for name, v in res.items():
            print(
                f"| {p} ({vis}) | {r} | {name} | {v['tokens']:,.0f} | {v['pairs'] / 1e6:,.2f}M "
                f"| {v['flops'] / 1e12:,.1f} | {res['TRL']['flops'] / v['flops']:.2f}x |"
            )
    print("\ngpu_check model (4 LLM layers, 4 vision layers):")
    for name, p, vis, lengths in (
        ("mid", 1090, 1024, (100, 400, 700, 1000)),
        ("long", 4162, 4096, (500, 1000, 1500, 2000)),
    ):
        res = step_flops(p, vis, lengths, layers=4, vision_layers=4)
        figures = ", ".join(
            f"{k} {v['flops'] / 1e12:.1f} TF ({res['TRL']['flops'] / v['flops']:.2f}x)"
            for k, v in res.items()
        )
        print(f"{name}: {figures}")


if __name__ == "__main__":
    main()
