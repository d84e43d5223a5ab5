"""Row files a user hands in (evaluation sets, SafetyBench task files and answers):
Parquet (a file or a folder of parts) or JSONL, one row per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a Parquet file/folder or a JSONL file; a line that is not JSON is a
    ``ValueError`` naming the file and the line (blank lines are skipped)."""
    path = Path(path)
    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if text.strip():
                try:
                    rows.append(json.loads(text))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n}: not JSON ({exc.msg})") from None
    return rows
