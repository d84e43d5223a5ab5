"""MIA-DPO's pair construction (Liu et al., 2024b; a Table 4 baseline), grid-collage form.

MIA-DPO turns single-image preference data into multi-image data: the query's image is
put among unrelated images and the question names which one to look at; the rejected
answer is one that looked at the wrong image (the paper finds such answers with the
model's attention; here the answer written for a distractor's own question stands for
it: a fluent answer about another picture). Of MIA-DPO's three layouts (sequence, grid
collage, pic-in-pic) this builds the grid collage, which fits a one-image record:

* each image record of a part with at least ``n`` other image records gets one pair;
* the collage is a 2 x 2 grid of equal cells (the target and ``n`` distractors, the
  next image records of the part, cyclically; empty cells stay black), the target's
  cell fixed by a hash of the query id;
* question: ``"This picture is a 2 x 2 grid of images. Look only at the <cell> image. <q>"``;
* chosen = the record's best-ranked original response; rejected = the best response of
  the first distractor whose text differs from the chosen one.

The pair is a new query (``<query_id>#mia``); it trains with ``loss.kind=mia_dpo``
(MIA-DPO's objective is DPO's). Records without an image (video, text) or without
enough distractors give no pair and are counted.
"""

from __future__ import annotations

import hashlib
from typing import Any

from PIL import Image

from mmrlhf_ray.data.media import encode_png, row_images
from mmrlhf_ray.data.schemas import MEDIA_KEYS

CELLS = ("top-left", "top-right", "bottom-left", "bottom-right")


def grid_collage(images: list[Image.Image], target: int, cell: int) -> Image.Image:
    """A 2 x 2 grid of ``cell`` px squares: ``images[0]`` at cell ``target``, the others
    in the remaining cells in order."""
    canvas = Image.new("RGB", (2 * cell, 2 * cell))
    slots = [target] + [c for c in range(4) if c != target]
    for img, slot in zip(images, slots, strict=False):
        canvas.paste(
            img.convert("RGB").resize((cell, cell)), ((slot % 2) * cell, (slot // 2) * cell)
        )
    return canvas


def target_cell(query_id: str) -> int:
    """The target's cell, 0-3, from a stable hash of the query id."""
    return hashlib.sha256(query_id.encode()).digest()[0] % 4


def best_response(record: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(index, response) of the best-ranked original (not constructed) response."""
    ranked = [
        (r["rank"], i, r)
        for i, r in enumerate(record["responses"])
        if r.get("rank") is not None and not r.get("constructed")
    ]
    if not ranked:
        return None
    _, i, r = min(ranked, key=lambda t: (t[0], t[1]))
    return i, r


def _has_image(record: dict[str, Any]) -> bool:
    return record.get("image") is not None or bool(record.get("image_path"))


def mia_pair(record: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The MIA-DPO pair of ``record`` with distractor records ``others``, or None."""
    best = best_response(record)
    if best is None:
        return None
    ci, chosen = best
    rejected = next(
        (
            b
            for b in map(best_response, others)
            if b and b[1]["text"].strip() != chosen["text"].strip()
        ),
        None,
    )
    if rejected is None:
        return None
    images = [row_images(r)[0] for r in (record, *others)]
    cell = max(images[0].size)
    target = target_cell(record["query_id"])
    qid = f"{record['query_id']}#mia"
    cid = chosen.get("response_id") or f"{record['query_id']}#r{ci}"
    rid = f"{qid}:" + (rejected[1].get("response_id") or f"r{rejected[0]}")
    return {
        "pair_id": f"{qid}::{cid}>{rid}",
        "query_id": qid,
        "question": f"This picture is a 2 x 2 grid of images. Look only at the {CELLS[target]} "
        f"image. {record['question']}",
        **{k: None for k in MEDIA_KEYS},
        "image": encode_png(grid_collage(images, target, cell)),
        "category": record.get("category"),
        "chosen_id": cid,
        "rejected_id": rid,
        "chosen": chosen["text"],
        "rejected": rejected[1]["text"],
        "chosen_rank": chosen.get("rank"),
        "rejected_rank": None,
        "chosen_reason": chosen.get("score_reason"),
        "rejected_reason": None,
        "chosen_critique": chosen.get("critique"),
        "rejected_critique": None,
        "is_tie": False,
        "margin": None,
        "margin_source": None,
        "ref_chosen_logp": None,
        "ref_rejected_logp": None,
    }


def mia_pairs(records: list[dict[str, Any]], n_distractors: int) -> tuple[list[dict], int]:
    """(MIA-DPO pairs of a part's records, records that gave none). ``n_distractors``
    in 1..3: the distractors of image record i are the next image records, cyclically."""
    if not 1 <= n_distractors <= 3:
        raise ValueError(f"mia_distractors: must be in 1..3 (a 2 x 2 grid), got {n_distractors}")
    with_image = [r for r in records if _has_image(r)]
    pairs, without = [], len(records) - len(with_image)
    for i, record in enumerate(with_image):
        others = [with_image[(i + d) % len(with_image)] for d in range(1, n_distractors + 1)]
        pair = mia_pair(record, others) if len(with_image) > n_distractors else None
        if pair is None:
            without += 1
        else:
            pairs.append(pair)
    return pairs, without
