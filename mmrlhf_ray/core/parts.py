"""Part integrity: what a finished stage's manifest records about its Parquet parts, and
the check that the files still match it.

``finish()`` writes, per sub-directory (``data``, ``quarantine``), every part's row
count, byte size and SHA-256 (``sha256sum <part>.parquet`` gives the same digest)::

    "part_files": {"data": {"part-00000": {"rows": 12, "bytes": 4321, "sha256": "9f.."}},
                   "quarantine": {...}}

``part_problems`` compares the files on disk with that list: a listed part that is gone
(missing), of another size (its footer's row count named when it still reads, else
truncated), whose bytes hash differently (corrupted), or a ``.parquet`` file the
manifest does not list (an extra).

Cost: hashing reads every byte once, streamed in 1 MiB blocks (any pyarrow filesystem,
so parts on object stores work too). Within one process a part is hashed at most once:
a digest is remembered by (path, size, mtime) and reused while those are unchanged, but
only for files last modified more than ``SETTLED_S`` before they were hashed (a file
rewritten within the filesystem's timestamp resolution could keep its mtime, so fresh
files are always hashed again; git's "racy" rule).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

SUBDIRS = ("data", "quarantine")
BLOCK = 1 << 20
SETTLED_S = 2.0
_DIGESTS: dict[tuple[str, str, int, int], str] = {}


@dataclass(frozen=True)
class PartProblem:
    """One part that does not match the manifest: ``path`` is relative to the stage
    root (``data/part-00001.parquet``)."""

    subdir: str
    name: str
    what: str  # "is missing", "is truncated (10 of 200 bytes)", ...

    @property
    def path(self) -> str:
        return f"{self.subdir}/{self.name}.parquet"

    @property
    def listed(self) -> bool:
        return self.what != UNLISTED

    def __str__(self) -> str:
        return f"part {self.path} {self.what}"


UNLISTED = "is not in the manifest (an extra file)"
PART_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]{0,199}")  # no separator, NUL or space


def bad_part_names(problems: list[PartProblem]) -> list[str]:
    """Names listed by a manifest that are not plain part names (``part-00001``): a
    path separator (``../../x``), a NUL... A repair deletes files by these names, so any
    such name stops it before anything is deleted."""
    return [p.name for p in problems if p.listed and not PART_NAME.fullmatch(p.name)]


def file_sha256(fs: pafs.FileSystem, path: str, info: pafs.FileInfo | None = None) -> str:
    """Hex SHA-256 of a file's bytes, streamed; reused for a settled, unchanged file."""
    info = info or fs.get_file_info(path)
    key = (fs.type_name, path, info.size, info.mtime_ns or 0)
    if info.mtime_ns and key in _DIGESTS:
        return _DIGESTS[key]
    started_ns = time.time_ns()
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while block := f.read(BLOCK):
            digest.update(block)
    hexdigest = digest.hexdigest()
    if info.mtime_ns and info.mtime_ns < started_ns - SETTLED_S * 1e9:
        _DIGESTS[key] = hexdigest
    return hexdigest


def present_parts(fs: pafs.FileSystem, directory: str) -> dict[str, pafs.FileInfo]:
    """``.parquet`` files of a directory by part name (temp files are not parts)."""
    selector = pafs.FileSelector(directory, allow_not_found=True)
    return {
        info.base_name[: -len(".parquet")]: info
        for info in fs.get_file_info(selector)
        if info.base_name.endswith(".parquet") and info.type == pafs.FileType.File
    }


def describe_parts(fs: pafs.FileSystem, root: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The manifest's ``part_files``: rows (Parquet footer), bytes and sha256 per part."""
    listing: dict[str, dict[str, dict[str, Any]]] = {}
    for subdir in SUBDIRS:
        listing[subdir] = {}
        for name, info in sorted(present_parts(fs, f"{root}/{subdir}").items()):
            rows = pq.ParquetFile(info.path, filesystem=fs).metadata.num_rows
            listing[subdir][name] = {
                "rows": rows,
                "bytes": info.size,
                "sha256": file_sha256(fs, info.path, info),
            }
    return listing


def _footer_rows(fs: pafs.FileSystem, path: str) -> int | None:
    try:
        return pq.ParquetFile(path, filesystem=fs).metadata.num_rows
    except (pa.ArrowException, OSError):
        return None  # no readable footer (a truncated file)


def _mismatch(fs: pafs.FileSystem, info: pafs.FileInfo, entry: dict[str, Any]) -> str | None:
    """What is wrong with one listed part, or None; hashes only when the size matches."""
    if info.size != entry["bytes"]:
        rows = _footer_rows(fs, info.path)
        if rows is not None and rows != entry["rows"]:
            return f"has {rows} rows, the manifest says {entry['rows']}"
        if info.size < entry["bytes"]:
            return f"is truncated ({info.size} of {entry['bytes']} bytes)"
        return f"has {info.size} bytes, the manifest says {entry['bytes']}"
    if file_sha256(fs, info.path, info) != entry["sha256"]:
        return "is corrupted (its sha256 differs from the manifest's)"
    return None


def part_problems(
    fs: pafs.FileSystem, root: str, listing: dict[str, dict[str, dict]], hash_bytes: bool = True
) -> list[PartProblem]:
    """Parts under ``root`` that do not match ``listing`` (the manifest's ``part_files``).
    ``hash_bytes=False``: names only (missing or extra), no I/O beyond a listing."""
    problems = []
    for subdir in SUBDIRS:
        listed = listing.get(subdir) or {}
        present = present_parts(fs, f"{root}/{subdir}")
        for name, entry in sorted(listed.items()):
            info = present.get(name)
            what = "is missing" if info is None else None
            if info is not None and hash_bytes:
                what = _mismatch(fs, info, entry)
            if what:
                problems.append(PartProblem(subdir, name, what))
        problems += [PartProblem(subdir, n, UNLISTED) for n in sorted(set(present) - set(listed))]
    return problems


def listed_rows(listing: dict[str, dict[str, dict]], subdir: str = "data") -> int:
    return sum(int(entry["rows"]) for entry in (listing.get(subdir) or {}).values())


def summary(problems: list[PartProblem], limit: int = 3) -> str:
    """``part data/a.parquet is missing; part ... (and 2 more)``: for one line."""
    text = "; ".join(str(p) for p in problems[:limit])
    if len(problems) > limit:
        text += f" (and {len(problems) - limit} more)"
    return text
