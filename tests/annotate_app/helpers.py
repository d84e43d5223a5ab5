"""A tiny run directory for the annotation app: a finished ``curate`` stage (one image
query, one video query, one more image query) and the ``generate`` stage's responses."""

from __future__ import annotations

import io

import pyarrow as pa
from PIL import Image

from mmrlhf_ray.annotate_app.store import Store
from mmrlhf_ray.annotate_app.tasks import load_tasks
from mmrlhf_ray.core.stage import StageDir

RESPONSES = {
    "q-image": (
        "What colour is the circle?",
        "short",
        ["The circle is red.", "The circle is blue.", "There is no circle."],
    ),
    "q-video": (
        "Which way does the square move?",
        "video",
        ["It moves to the right.", "It moves up.", "It does not move."],
    ),
    "q-third": ("How many shapes are there?", "short", ["Two.", "Three."]),
}
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "lead": "lead-pw-3"}


def png(colour: tuple[int, int, int], box: int = 0) -> bytes:
    img = Image.new("RGB", (16, 16), colour)
    img.paste((255, 255, 255), (box, 4, box + 4, 8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_run(run_dir: str) -> str:
    curate = StageDir(run_dir, "curate")
    curate.begin({"test": True})
    rows = [
        {"sample_id": "q-image", "image": png((200, 0, 0))},
        {"sample_id": "q-video", "video_frames": [png((0, 0, 200), box=4 * i) for i in range(3)]},
        {"sample_id": "q-third", "image": png((0, 150, 0))},
    ]
    curate.write_part(
        "part-00000",
        pa.Table.from_pylist(
            rows,
            schema=pa.schema(
                [
                    ("sample_id", pa.string()),
                    ("image", pa.binary()),
                    ("video_frames", pa.list_(pa.binary())),
                ]
            ),
        ),
    )
    curate.finish(3, 3, 0)
    gen = StageDir(run_dir, "generate")
    gen.begin({"input_stage": "curate"})
    out = []
    for qid, (question, category, texts) in RESPONSES.items():
        for i, text in enumerate(texts):
            out.append(
                {
                    "response_id": f"{qid}/m{i}/0",
                    "sample_id": qid,
                    "model": f"m{i}",
                    "sample_index": 0,
                    "source": "test",
                    "category": category,
                    "question": question,
                    "text": text,
                    "is_empty": False,
                }
            )
    gen.write_part("part-00000", pa.Table.from_pylist(out))
    gen.finish(len(out), len(out), 0)
    return run_dir


def add_team(store: Store) -> None:
    store.add_user("alice", "rater", PASSWORDS["alice"])
    store.add_user("bob", "rater", PASSWORDS["bob"])
    store.add_user("lead", "lead", PASSWORDS["lead"])


def team_store(run_dir: str, raters_per_query: int = 2) -> Store:
    """The run's store with its first two queries loaded, the team added and assigned."""
    store = Store(f"{run_dir}/annotate-app/annotations.sqlite")
    store.add_tasks(*load_tasks(run_dir, "generate")[:2])
    add_team(store)
    store.assign(raters_per_query)
    return store
