"""A stage's directory in a run: Parquet parts, quarantine, and a manifest.

Layout (``run_dir`` may be a local path or any pyarrow filesystem URI, e.g. ``s3://b/r``)::

    <run_dir>/<stage>/manifest.json       config, input fingerprints, counts, status
    <run_dir>/<stage>/data/<part>.parquet  output rows, one file per unit of work
    <run_dir>/<stage>/quarantine/<part>.parquet   rejected rows with reasons

Contract every stage keeps:

* idempotent: ``is_done()`` is true once ``finish()`` wrote ``status: done`` with the
  same config; a finished stage re-run does nothing;
* resumable: parts are written atomically (temp name, then rename), so after a crash
  ``has_part(name)`` tells which units of work to skip;
* nothing silently lost: ``finish`` checks ``rows_in == rows_out + rows_quarantined``;
* inputs a stage can trust: the manifest lists every part with its rows, bytes and
  sha256 (``mmrlhf_ray.core.parts``). ``require_done`` (so every stage's ``begin_stage``)
  checks an upstream stage's parts against it before any work starts and stops with one
  line naming the part and the command to re-run; re-running the upstream stage deletes
  its damaged parts and re-makes exactly those (``skip_if_done``). ``read`` checks that
  the rows read equal the rows the manifest lists. Manifests written before part lists
  existed (no ``part_files``) are accepted unverified, so older run dirs still work.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from mmrlhf_ray.core.config import config_to_dict
from mmrlhf_ray.core.parts import (
    SUBDIRS,
    PartProblem,
    bad_part_names,
    describe_parts,
    listed_rows,
    part_problems,
    summary,
)
from mmrlhf_ray.core.quarantine import QUARANTINE_SCHEMA

STAGE_NAME = re.compile(r"^[a-z][a-z0-9-]*(/[a-z0-9-]+)*$")  # e.g. "pairs", "import/pool"


class CountMismatch(RuntimeError):
    """rows in != rows out + rows quarantined: something would be lost."""


class StageInputError(FileNotFoundError):
    """An input is missing: an upstream stage has not finished (or is stale, or its parts
    no longer match its manifest), a model directory is not there. A user error:
    ``mmrlhf`` prints it as one line and exits 2; the message says what to run or set."""


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(uri)


@dataclass
class StageDir:
    """The output directory of one stage of one run."""

    run_dir: str
    stage: str
    fs: pafs.FileSystem = field(init=False, repr=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.fs, base = _filesystem(self.run_dir)
        self.root = f"{base.rstrip('/')}/{self.stage}"

    # ---- paths -------------------------------------------------------------------
    @property
    def data_dir(self) -> str:
        return f"{self.root}/data"

    @property
    def quarantine_dir(self) -> str:
        return f"{self.root}/quarantine"

    @property
    def manifest_path(self) -> str:
        return f"{self.root}/manifest.json"

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def local_path(self, *parts: str) -> str:
        """A path usable by libraries that need a local file (models, plots)."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            raise ValueError(f"{self.stage}: {self.run_dir} is not a local run dir")
        self.fs.create_dir(self.root, recursive=True)
        return self.path(*parts)

    # ---- manifest ------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        info = self.fs.get_file_info(self.manifest_path)
        if info.type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(self.manifest_path) as f:
            return json.loads(f.read().decode())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.fs.create_dir(self.root, recursive=True)
        self._atomic_write(self.manifest_path, json.dumps(manifest, indent=2, default=str).encode())

    def is_done(self, config: dict[str, Any] | None = None) -> bool:
        """Finished, under ``config`` (when given), from upstream stages that have not
        changed since (an upstream stage re-made after this one finished makes it stale)."""
        manifest = self.read_manifest()
        if not manifest or manifest.get("status") != "done":
            return False
        if config is not None and manifest.get("config_hash") != config_hash(config):
            return False
        stale = self.stale_inputs(manifest)
        if stale:
            print(
                f"{self.stage}: upstream {', '.join(stale)} changed since it finished: "
                f"to be re-made"
            )
        return not stale

    def stale_inputs(self, manifest: dict[str, Any] | None = None) -> list[str]:
        """Upstream stages of this run (named in the manifest's inputs) whose output is
        not the one this stage was made from. Inputs that are not stages are skipped."""
        manifest = manifest if manifest is not None else self.read_manifest() or {}
        stale = []
        for name, fingerprint in (manifest.get("inputs") or {}).items():
            if not STAGE_NAME.match(name):
                continue
            upstream = StageDir(self.run_dir, name)
            if upstream.read_manifest() is not None and upstream.fingerprint() != fingerprint:
                stale.append(name)
        return stale

    def begin(
        self, config: dict[str, Any], inputs: dict[str, str] | None = None, keep_parts: bool = False
    ) -> bool:
        """Record that the stage started. Parts of an interrupted attempt with the same
        config and inputs are kept (the stage finishes what is missing); parts made under
        another config or from other inputs are stale and deleted, unless ``keep_parts``
        (a stage that checks staleness itself). Returns True when parts were dropped."""
        previous = self.read_manifest() or {}
        inputs = inputs or {}
        stale = bool(previous) and (
            previous.get("config_hash") != config_hash(config)
            or previous.get("inputs", {}) != inputs
        )
        if stale and not keep_parts:
            for directory in (self.data_dir, self.quarantine_dir):
                self.fs.delete_dir_contents(directory, missing_dir_ok=True)
            print(
                f"{self.stage}: config or inputs changed since the last attempt: "
                f"its parts were deleted"
            )
        attempts = int(previous.get("attempts", 0)) + 1
        self.write_manifest(
            {
                "stage": self.stage,
                "status": "running",
                "config": config,
                "config_hash": config_hash(config),
                "inputs": inputs,
                "attempts": attempts,
                "started": time.time(),
            }
        )
        return stale and not keep_parts

    def attempt_key(self) -> str:
        """Short hash of the running attempt's config and inputs: names state kept beside
        the parts (e.g. a Ray Train run), so a changed config never resumes an old one."""
        manifest = self.read_manifest() or {}
        return config_hash({"config": manifest.get("config"), "inputs": manifest.get("inputs")})

    def finish(
        self,
        rows_in: int,
        rows_out: int,
        rows_quarantined: int,
        rows_unselected: int = 0,
        **extra: Any,
    ) -> dict:
        """Mark done after checking the counts add up; returns the manifest.

        Rows a stage leaves out on purpose (curation's unselected pool rows) count as
        ``rows_unselected``: in = out + unselected + quarantined.
        """
        if rows_in != rows_out + rows_unselected + rows_quarantined:
            raise CountMismatch(
                f"{self.stage}: rows in {rows_in} != out {rows_out} + unselected "
                f"{rows_unselected} + quarantined {rows_quarantined}"
            )
        manifest = self.read_manifest() or {"stage": self.stage}
        manifest.update(
            status="done",
            finished=time.time(),
            part_files=describe_parts(self.fs, self.root),
            counts={
                "in": rows_in,
                "out": rows_out,
                "quarantined": rows_quarantined,
                **({"unselected": rows_unselected} if rows_unselected else {}),
            },
            **extra,
        )
        if "started" in manifest:
            manifest["wall_seconds"] = round(manifest["finished"] - manifest["started"], 2)
        self.write_manifest(manifest)
        return manifest

    def fingerprint(self) -> str:
        """Identifies this stage's finished output (config hash + counts)."""
        manifest = self.read_manifest() or {}
        payload = json.dumps(
            [manifest.get("config_hash"), manifest.get("counts"), manifest.get("finished")],
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # ---- part integrity (mmrlhf_ray/core/parts.py) ----------------------------------------
    def _part_listing(self) -> dict[str, dict] | None:
        """The finished manifest's ``part_files``; None if not finished or written before
        part lists existed (such output is accepted unverified)."""
        manifest = self.read_manifest() or {}
        return manifest.get("part_files") if manifest.get("status") == "done" else None

    def part_problems(self, hash_bytes: bool = True) -> list[PartProblem]:
        """Parts that no longer match the manifest (missing, truncated, corrupted, extra).
        Hashes every part once per process (O(bytes)); ``hash_bytes=False``: names only."""
        listing = self._part_listing()
        return [] if listing is None else part_problems(self.fs, self.root, listing, hash_bytes)

    def damaged_message(self, what: str | list[PartProblem]) -> str:
        """One line: this stage, what is wrong with it, the command that re-makes it."""
        if isinstance(what, list):
            them = "it" if len(what) == 1 else "them"
            return self.damaged_message(summary(what)) + f" to re-make {them}"
        return f"stage '{self.stage}' in {self.run_dir}: {what}: re-run `{self.command()}`"

    def command(self) -> str:
        return f"mmrlhf {self.stage.split('/')[0]} run_dir={self.run_dir}"

    def check_parts(self) -> None:
        """Raise ``StageInputError`` (one line: stage, part, what is wrong, what to run)
        when a part no longer matches the manifest. Reads every byte (see parts.py)."""
        problems = self.part_problems()
        if problems:
            raise StageInputError(self.damaged_message(problems))

    def check_rows_read(self, rows: int, quarantine: bool = False) -> None:
        """Rows in of a reader = rows out of this stage: ``rows`` read from all parts of
        ``data`` (or ``quarantine``) must equal what the finished manifest lists."""
        listing = self._part_listing()
        subdir = SUBDIRS[1] if quarantine else SUBDIRS[0]
        if listing is not None and rows != listed_rows(listing, subdir):
            raise StageInputError(
                self.damaged_message(
                    f"read {rows} rows from {subdir}/, its manifest lists "
                    f"{listed_rows(listing, subdir)}"
                )
            )

    def skip_if_done(self, config: dict[str, Any] | None = None) -> bool:
        """True when finished (``is_done``) and every part still matches the manifest,
        sub-stages included (``toyworld/benchmark``): the caller skips the work. When
        parts are damaged, deletes them (with their partner part of the same name: a
        unit of work is its data part and its quarantine part) and says which will be
        re-made; returns False, so the stage's resume (``has_part``) re-makes exactly
        those and ``finish`` re-checks the counts."""
        if not self.is_done(config):
            return False
        problems = self.part_problems()
        if problems:
            self._delete_damaged(problems)
            return False
        damaged = [sub.stage for sub in self._sub_stages() if sub.part_problems()]
        if damaged:
            print(f"{self.stage}: parts of {', '.join(damaged)} do not match: re-making them")
        return not damaged

    def _delete_damaged(self, problems: list[PartProblem]) -> None:
        bad = bad_part_names(problems)
        if bad:  # validated before any file is deleted
            raise StageInputError(
                f"{self.stage}: the manifest lists {bad[0]!r}, not a part name: nothing "
                f"was deleted; remove {self.root} (or restore its manifest.json) and re-run"
            )
        units = sorted({p.name for p in problems if p.listed})
        paths = [f"{self.root}/{p.path}" for p in problems if not p.listed]
        paths += [f"{self.root}/{d}/{name}.parquet" for name in units for d in SUBDIRS]
        for path in paths:
            if self.fs.get_file_info(path).type == pafs.FileType.File:
                self.fs.delete_file(path)
        remade = ", ".join(units) or "none (extra files deleted)"
        print(f"{self.stage}: {summary(problems)}: re-making part(s) {remade}")

    def _sub_stages(self) -> list[StageDir]:
        """Finished stages nested in this one's directory (``toyworld/benchmark``)."""
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        subs = [
            StageDir(self.run_dir, f"{self.stage}/{info.base_name}")
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name not in SUBDIRS
        ]
        return [sub for sub in subs if sub.is_done()]

    # ---- parts ----------------------------------------------------------------------
    def _atomic_write(self, path: str, payload: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(payload)
        self.fs.move(tmp, path)

    def _write_table(self, directory: str, name: str, table: pa.Table) -> str:
        self.fs.create_dir(directory, recursive=True)
        path = f"{directory}/{name}.parquet"
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, path)
        return path

    def write_part(self, name: str, table: pa.Table) -> str:
        return self._write_table(self.data_dir, name, table)

    def write_quarantine(self, name: str, rows: list[dict[str, Any]]) -> str | None:
        """Quarantined rows: dicts with source, locator, field, reason, raw."""
        if not rows:
            return None
        clean = [
            {
                k: (None if r.get(k) is None else str(r.get(k))[:4000])
                for k in QUARANTINE_SCHEMA.names
            }
            for r in rows
        ]
        table = pa.Table.from_pylist(clean, schema=QUARANTINE_SCHEMA)
        return self._write_table(self.quarantine_dir, name, table)

    def part_names(self, quarantine: bool = False) -> list[str]:
        directory = self.quarantine_dir if quarantine else self.data_dir
        selector = pafs.FileSelector(directory, allow_not_found=True)
        names = [
            info.base_name[: -len(".parquet")]
            for info in self.fs.get_file_info(selector)
            if info.base_name.endswith(".parquet")
        ]
        return sorted(names)

    def has_part(self, name: str) -> bool:
        info = self.fs.get_file_info(f"{self.data_dir}/{name}.parquet")
        return info.type == pafs.FileType.File

    def part_paths(self, quarantine: bool = False) -> list[str]:
        directory = self.quarantine_dir if quarantine else self.data_dir
        return [f"{directory}/{n}.parquet" for n in self.part_names(quarantine)]

    def read(self, columns: list[str] | None = None, quarantine: bool = False) -> pa.Table:
        """All rows of the data (or quarantine) parts. Of a finished stage: the part
        names must be the manifest's and the rows read its row count (no hashing here:
        ``require_done`` hashed them)."""
        subdir = SUBDIRS[1] if quarantine else SUBDIRS[0]
        named = [p for p in self.part_problems(hash_bytes=False) if p.subdir == subdir]
        if named:
            raise StageInputError(self.damaged_message(named))
        paths = self.part_paths(quarantine)
        if not paths:
            raise FileNotFoundError(f"{self.stage}: no parts under {self.root}")
        tables = [pq.read_table(p, columns=columns, filesystem=self.fs) for p in paths]
        table = pa.concat_tables(tables, promote_options="default")
        self.check_rows_read(table.num_rows, quarantine)
        return table

    def count_rows(self, quarantine: bool = False) -> int:
        return sum(
            pq.ParquetFile(p, filesystem=self.fs).metadata.num_rows
            for p in self.part_paths(quarantine)
        )


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def require_done(run_dir: str, stage: str) -> StageDir:
    """The finished, intact output of an upstream stage, or a clear error saying what to
    run. Checks every part against the upstream manifest (``check_parts``: hashes each
    part, once per process), so call it before building any work on the input."""
    upstream = StageDir(run_dir, stage)
    if not upstream.is_done():
        stale = upstream.stale_inputs()
        if stale and (upstream.read_manifest() or {}).get("status") == "done":
            raise StageInputError(
                f"stage '{stage}' in {run_dir} is stale: {', '.join(stale)} changed after it "
                f"finished: re-run `{upstream.command()}` first"
            )
        raise StageInputError(
            f"stage '{stage}' has not finished in {run_dir}: run `{upstream.command()}` first"
        )
    upstream.check_parts()
    return upstream


def _where(run_dir: str, upstream: str | StageDir) -> tuple[str, str]:
    if isinstance(upstream, StageDir):
        return upstream.run_dir, upstream.stage
    return run_dir, upstream


def begin_stage(
    cfg: Any,
    stage: str,
    inputs: Iterable[str | StageDir] = (),
    other_inputs: dict[str, str] | None = None,
    keep_parts: bool = False,
) -> tuple[StageDir, bool]:
    """Skip-if-done, then begin: the opening every stage shares. Returns ``(out, done)``.

    ``inputs`` are the upstream stages the stage reads: names in ``cfg.run_dir`` or
    ``StageDir``s (another run's); each must have finished with its parts intact
    (``require_done``, checked before any work). Their fingerprints go into
    the manifest, so re-making any of them makes this stage stale. ``other_inputs`` are
    inputs that are not stages (a file's fingerprint, a policy path): a change re-runs
    the stage too. ``done``: the stage already finished with this config and inputs
    (the caller returns ``out.read_manifest()``); a finished stage whose own parts are
    damaged is not done: they are deleted and re-made (``StageDir.skip_if_done``).
    """
    out = StageDir(cfg.run_dir, stage)
    config = config_to_dict(cfg)
    inputs, other_inputs = list(inputs), dict(other_inputs or {})
    names = {u.stage if isinstance(u, StageDir) else u for u in inputs}
    recorded = (out.read_manifest() or {}).get("inputs") or {}
    same_inputs = set(recorded) == names | set(other_inputs) and all(
        recorded[k] == v for k, v in other_inputs.items()
    )
    if same_inputs and out.skip_if_done(config):
        print(f"{stage}: already done in {out.root}")
        return out, True
    upstream = [require_done(*_where(cfg.run_dir, u)) for u in inputs]
    fingerprints = {u.stage: u.fingerprint() for u in upstream}
    out.begin(config, inputs={**fingerprints, **other_inputs}, keep_parts=keep_parts)
    return out, False
