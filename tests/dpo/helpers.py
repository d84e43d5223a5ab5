"""Helpers of the DPO tests: small hand-made pair tables, a precomputed ref-logps stage."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.data.media import encode_png
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.dpo.reference import fill_pairs, reference_logps
from mmrlhf_ray.models import load_policy
from mmrlhf_ray.models.settings import EncodingSettings


def make_pairs(n_queries: int = 3, k: int = 4, seed: int = 0, video_every: int = 0) -> list[dict]:
    """All C(k,2) pairs of ``n_queries`` queries, response i ranked i+1 (0 best).

    Responses differ in length so padding is exercised; margins are the rank gaps.
    Every ``video_every``-th query carries a 4-frame video instead of an image.
    """
    rng = np.random.default_rng(seed)
    colours = ["red", "blue", "green", "yellow", "purple", "orange"]
    rows = []
    for q in range(n_queries):
        frames = [
            encode_png(Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")))
            for _ in range(4)
        ]
        video = video_every and q % video_every == video_every - 1
        media = {"video_frames": frames} if video else {"image": frames[0]}
        resps = [f"The circle is {colours[(q + i) % 6]}." + " It is big." * i for i in range(k)]
        for a in range(k):
            for b in range(a + 1, k):
                rows.append(
                    dict(
                        pair_id=f"q{q}-{a}-{b}",
                        query_id=f"q{q}",
                        question="What colour is the circle?",
                        category="video" if video else "short",
                        chosen=resps[a],
                        rejected=resps[b],
                        chosen_id=f"q{q}-r{a}",
                        rejected_id=f"q{q}-r{b}",
                        chosen_rank=a + 1,
                        rejected_rank=b + 1,
                        margin=float(b - a),
                        margin_source="oracle",
                        **media,
                    )
                )
    return rows


def write_ref_logps_stage(run_dir, rows, policy_dir, max_response_tokens=256, max_frames=4):
    """The ref-logps stage's output, computed in-process (the stage has its own test)."""
    model, processor = load_policy(policy_dir)
    groups, _ = group_pairs(rows)
    done, quarantine = fill_pairs(rows, reference_logps(model, processor, groups))
    assert not quarantine
    out = StageDir(str(run_dir), "ref-logps")
    out.begin({"test": True})
    out.write_part("part-00000", to_table(done, "pair"))
    encoding = EncodingSettings.of(policy_dir, max_response_tokens, max_frames)
    out.finish(len(rows), len(done), 0, encoding=encoding.to_dict())
