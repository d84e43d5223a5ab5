"""The curation report: composition before/after (paper Table 1) and a cluster map (Fig. 3).

* :func:`composition_rows` / :func:`composition_markdown` / :func:`write_composition_csv`:
  rows per category (Image Long/Short/MCQ, Safety, Video) in the pool and in the
  selection, with shares, like the paper's Table 1.
* :func:`cluster_map`: a 2-D projection of sample embeddings coloured by cluster, UMAP
  when ``umap-learn`` is installed, PCA otherwise (numpy SVD), saved as PNG.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mmrlhf_ray.data.schemas import CATEGORIES

LABELS = {
    "long": "Image Long",
    "short": "Image Short",
    "mcq": "Image MCQ",
    "safety": "Image Safety",
    "video": "Video",
}


def composition_rows(
    before: dict[str, int], after: dict[str, int], quarantined: int = 0
) -> list[dict[str, object]]:
    """One row per category plus a total: counts and percentages before and after."""
    total_b, total_a = sum(before.values()), sum(after.values())
    rows = []
    for c in CATEGORIES:
        b, a = int(before.get(c, 0)), int(after.get(c, 0))
        rows.append(
            {
                "category": LABELS[c],
                "pool": b,
                "pool_pct": round(100 * b / total_b, 2) if total_b else 0.0,
                "selected": a,
                "selected_pct": round(100 * a / total_a, 2) if total_a else 0.0,
            }
        )
    rows.append(
        {
            "category": "Total",
            "pool": total_b,
            "pool_pct": 100.0 if total_b else 0.0,
            "selected": total_a,
            "selected_pct": 100.0 if total_a else 0.0,
        }
    )
    rows.append(
        {
            "category": "Quarantined",
            "pool": quarantined,
            "pool_pct": "",
            "selected": 0,
            "selected_pct": "",
        }
    )
    return rows


def composition_markdown(rows: list[dict[str, object]]) -> str:
    """The composition table as Markdown (Table 1 of the paper, before and after)."""
    lines = ["| category | pool | pool % | selected | selected % |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['category']} | {r['pool']} | {r['pool_pct']} | {r['selected']} "
            f"| {r['selected_pct']} |"
        )
    return "\n".join(lines) + "\n"


def write_composition_csv(rows: list[dict[str, object]], target) -> None:
    """Write the table as CSV to a path or a text file object."""
    if isinstance(target, (str, Path)):
        with open(target, "w", newline="") as f:
            write_composition_csv(rows, f)
        return
    writer = csv.DictWriter(target, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def project_2d(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``vectors``: UMAP if installed, else PCA. Returns (xy, method)."""
    try:
        import umap  # type: ignore[import-not-found]

        xy = umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors)
        return np.asarray(xy), "UMAP"
    except ImportError:
        centred = vectors - vectors.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA"


def cluster_map(
    vectors: np.ndarray, labels: np.ndarray, centres: np.ndarray | None, path, seed: int = 0
) -> str:
    """Save a PNG scatter of ``vectors`` in 2-D coloured by cluster, centres marked.

    ``path`` is a file path or a binary file object; returns the projection's name.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = np.asarray(vectors, dtype=np.float32)
    extra = np.zeros((0, points.shape[1]), np.float32) if centres is None else centres
    xy, method = project_2d(np.concatenate([points, extra]), seed)
    xy, cxy = xy[: len(points)], xy[len(points) :]
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    ax.scatter(xy[:, 0], xy[:, 1], c=labels % 10, cmap="tab10", s=6, alpha=0.75, linewidths=0)
    if len(cxy):
        ax.scatter(
            cxy[:, 0], cxy[:, 1], marker="x", c="black", s=30, linewidths=1, label="k-means centres"
        )
        ax.legend(loc="best", fontsize=8)
    n_clusters = len(np.unique(labels))
    ax.set_title(f"Pool image embeddings: {len(points)} points, {n_clusters} clusters ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return method


SECTION = "## Curation"


def update_benchmarks_section(doc: str | Path, key: str, text: str) -> None:
    """Put ``text`` as block ``key`` inside the "## Curation" section of ``doc``.

    Blocks are delimited by ``<!-- key -->`` / ``<!-- /key -->``; the rest of the file
    (other engineers' sections) is left untouched. Creates file and section if absent.
    """
    path = Path(doc)
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"<!-- {key} -->\n{text.rstrip()}\n<!-- /{key} -->"
    if SECTION not in content:
        content = content.rstrip() + f"\n\n{SECTION}\n\n"
    head, rest = content.split(SECTION, 1)
    nxt = rest.find("\n## ")
    section, tail = (rest, "") if nxt < 0 else (rest[:nxt], rest[nxt:])
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    if start in section and end in section:
        before, after = section.split(start, 1)
        section = before + block + after.split(end, 1)[1]
    else:
        section = section.rstrip() + "\n\n" + block + "\n"
    path.write_text(head + SECTION + section.rstrip() + "\n" + tail)
