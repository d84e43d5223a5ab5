"""The quarantine row: where a bad input came from, which item, which field, why.

Every stage writes the rows it refuses as these (``<stage>/quarantine/*.parquet``), so
rows in = rows out + rows quarantined holds for each stage.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),  # file, shard or upstream stage
        pa.field("locator", pa.string()),  # line number, row id ...
        pa.field("field", pa.string()),  # the offending field
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),  # the original text/row (truncated), for repair
    ]
)


def raw_summary(row: dict[str, Any], limit: int = 2000) -> str:
    """A row as JSON for a quarantine row's ``raw`` (media bytes replaced by their sizes)."""

    def show(value: Any) -> Any:
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        if isinstance(value, list):
            return [show(v) for v in value]
        return value

    shown = {k: show(v) for k, v in row.items() if k != "ground_truth"}
    return json.dumps(shown, default=str)[:limit]


def quarantine_row(
    source: str, locator: Any, field: str, reason: str, raw: Any = None
) -> dict[str, Any]:
    """One ``QUARANTINE_SCHEMA`` row: where the bad input came from (``source``: a file,
    shard or upstream stage), which item (``locator``: line, row or pair id), the
    offending ``field``, why, and the input itself for repair (``raw``: text as is, a
    row as JSON with its media summarised)."""
    if isinstance(raw, dict):
        raw = raw_summary(raw)
    return {
        "source": None if source is None else str(source),
        "locator": None if locator is None else str(locator),
        "field": field,
        "reason": reason,
        "raw": None if raw is None else str(raw),
    }
