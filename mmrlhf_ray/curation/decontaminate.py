"""Decontamination: the curation pool checked against every evaluation set of the run.

A pool row that is (a copy of) an evaluation item trains the policy on the test. Four
signals, each cheap at 10M rows, each reported on its own:

* ``exact``: the decoded pixels' SHA-1 (:func:`image_digest`, the hash curation already
  keeps per row for exact-image dedup) equals an evaluation image's;
* ``phash``: the 64-bit DCT perceptual hash (``imagehash.phash``) is within
  ``phash_distance`` bits (Hamming): a resized or re-encoded copy;
* ``clip``: the cosine of the CLIP embeddings (the embedder curation already runs, on
  the evaluation images too) is at least ``clip_threshold``: a near-duplicate image;
* ``ngram``: the normalised question (NFKC, lower case, alphanumeric tokens) shares a
  token ``ngram``-gram (13, as GPT-3's decontamination) with an evaluation question.

Pure code (numpy, faiss, PIL, imagehash); ``jobs/curate.py`` loads the sets, embeds the
evaluation images with the pool's embedder, and runs the screens:

* ``evalsets.load_eval_set`` reads one set (pool-schema Parquet/JSONL such as the shapes
  benchmark, the official ``mm_reward_bench.jsonl``, or a generic JSONL with named
  fields, e.g. SafetyBench or lmms-eval task data exported to files);
* :func:`build_reference` turns the items into :class:`Reference` features;
* :func:`screen_hashes` / :func:`screen_questions` check a pool shard's hashes and
  questions; :class:`ClipScreen` checks embedding chunks during curation's streamed
  k-means assignment (no second read of the 10 GB of vectors);
* :func:`summarize` gives per set the count and the matched ids (manifest + report).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mmrlhf_ray.core.config import Choices

SIGNALS = ("exact", "phash", "clip", "ngram")
BENCHMARK_STAGE = "toyworld/benchmark"


# ---- config ------------------------------------------------------------------------
@dataclass
class EvalSetConfig(Choices):
    """One evaluation set given by path."""

    name: str = field(default="", metadata={"help": "name in the manifest and report"})
    path: str = field(default="", metadata={"help": "file: .parquet or .jsonl"})
    format: Literal["pool", "reward-bench", "jsonl"] = field(
        default="pool",
        metadata={
            "help": "pool (pool-schema rows, e.g. the shapes benchmark) | reward-bench "
            "(mm_reward_bench.jsonl) | jsonl (id/question/image fields named below)"
        },
    )
    image_root: str = field(default="", metadata={"help": "folder relative image paths are in"})
    id_field: str = field(default="id", metadata={"help": "jsonl: the item id field"})
    question_field: str = field(default="question", metadata={"help": "jsonl: the question"})
    image_field: str = field(default="image", metadata={"help": "jsonl: image path (or base64)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name or not self.path:
            raise ValueError(f"decontaminate.sets: name and path are required, got {self}")


@dataclass
class DecontaminateConfig(Choices):
    """`curate`'s check of the pool against the evaluation sets."""

    mode: Literal["off", "report", "drop"] = field(
        default="report",
        metadata={"help": "report matches | drop them from the selection (quarantined) | off"},
    )
    benchmark: bool = field(
        default=True, metadata={"help": "check the run's toyworld/benchmark when it exists"}
    )
    sets: list[EvalSetConfig] = field(
        default_factory=list, metadata={"help": "more evaluation sets by path"}
    )
    signals: list[str] = field(
        default_factory=lambda: list(SIGNALS), metadata={"help": "exact, phash, clip, ngram"}
    )
    phash_distance: int = field(
        default=4, metadata={"help": "max Hamming distance of 64-bit perceptual hashes"}
    )
    clip_threshold: float = field(
        default=0.95, metadata={"help": "CLIP cosine at or above which a row is a near-copy"}
    )
    clip_center: bool = field(
        default=False,
        metadata={
            "help": "cosine after subtracting the pool's mean embedding (for anisotropic "
            "embedders such as the tiny random CLIP, where every pair is ~0.9999)"
        },
    )
    clip_probes: int = field(
        default=4,
        metadata={
            "help": "compare a pool row only with evaluation images among whose `clip_probes` "
            "nearest k-means centres its own centre is (IVF); 0 = every image (exact)"
        },
    )
    ngram: int = field(default=13, metadata={"help": "question n-gram length (tokens)"})
    batch_size: int = field(default=64, metadata={"help": "evaluation images per embed call"})

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.signals) - set(SIGNALS))
        if unknown:
            raise ValueError(f"decontaminate.signals: {unknown} not among {list(SIGNALS)}")
        if not 0 <= self.phash_distance < 32:
            raise ValueError(f"decontaminate.phash_distance: {self.phash_distance} not in [0, 32)")
        if self.ngram < 1:
            raise ValueError(f"decontaminate.ngram: {self.ngram} must be >= 1")


# ---- features ----------------------------------------------------------------------
_TOKEN = re.compile(r"[0-9a-z]+")


def normalize_tokens(text: str) -> list[str]:
    """NFKC, lower case, alphanumeric tokens: punctuation, spacing and case do not count."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text or "").lower())


def ngram_keys(text: str, n: int) -> set[int]:
    """64-bit keys of the token ``n``-grams of ``text`` (empty when it is shorter)."""
    tokens = normalize_tokens(text)
    return {hash(" ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)}


_BASE = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64
_BASE_INV = pow(_BASE, -1, 1 << 64)


def question_tokens(questions: Any) -> Any:
    """Arrow list<string> of the normalised tokens of each question (vectorised, C++):
    NFKC, lower case, runs of ``[0-9a-z]`` (as :func:`normalize_tokens`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(questions, pa.string()) if not isinstance(questions, pa.Array) else questions
    text = text.fill_null("")
    ascii_ = pc.string_is_ascii(text)
    if not pc.all(ascii_).as_py():  # NFKC only where it can change something
        text = pc.if_else(ascii_, text, pc.utf8_normalize(text, "NFKC"))
    # empty edge tokens (leading/trailing separators) are never in a vocabulary
    return pc.split_pattern_regex(pc.ascii_lower(text) if pc.all(ascii_).as_py() else
                                  pc.utf8_lower(text), r"[^0-9a-z]+")  # fmt: skip


_POWERS: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(B^t, B^-t) mod 2^64 for t < n, computed once and grown as needed."""
    if len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]))
        with np.errstate(over="ignore"):
            for i, base in enumerate((_BASE, _BASE_INV)):
                p = np.cumprod(np.full(size - 1, base, np.uint64), dtype=np.uint64)
                _POWERS[i] = np.concatenate([np.ones(1, np.uint64), p])
    return _POWERS[0][:n], _POWERS[1][:n]


def window_hashes(tokens: Any, vocab: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, 64-bit hash) of every token ``n``-gram whose tokens are all in ``vocab``.

    Tokens become codes (their index in ``vocab``; others break the window), and a
    window's hash is the polynomial sum(c_i B^i) mod 2^64, from prefix sums divided by
    B^start (B odd, so invertible): numpy, no Python loop per row.
    """
    import pyarrow.compute as pc

    offsets = np.asarray(tokens.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    codes = pc.index_in(pc.list_flatten(tokens), value_set=vocab)
    known = np.asarray(codes.is_valid(), dtype=bool)
    c = np.asarray(codes.fill_null(0), dtype=np.uint64) + np.uint64(1)
    powers, inv = _powers(len(c))
    with np.errstate(over="ignore"):
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(c * powers, dtype=np.uint64)])
    unknown = np.concatenate([[0], np.cumsum(~known)])
    counts = np.maximum(np.diff(offsets) - n + 1, 0)
    rows = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = np.repeat(offsets[:-1], counts) + within
    ok = unknown[starts + n] == unknown[starts]
    rows, starts = rows[ok], starts[ok]
    with np.errstate(over="ignore"):
        hashes = (prefix[starts + n] - prefix[starts]) * inv[starts]
    return rows, hashes


def image_digest(image: Any) -> str:
    """SHA-1 of the decoded pixels and size (the pool's ``image_hash``)."""
    return hashlib.sha1(f"{image.size}".encode() + image.tobytes()).hexdigest()


def perceptual_hash(image: Any) -> int:
    """64-bit DCT perceptual hash (``imagehash.phash``) as a signed int64 value.

    Larger images are first box-filtered to 64 x 64 grey (cheap), so the hash's own
    Lanczos resize to 32 x 32 does not dominate the embedder's time on big images."""
    import imagehash
    from PIL import Image

    if max(image.size) > 64:
        image = image.convert("L").resize((64, 64), Image.Resampling.BOX)
    bits = imagehash.phash(image).hash.flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class EvalItem:
    """One evaluation item: its set, id, question and the image standing for it."""

    set_name: str
    item_id: str
    question: str
    image: Any = None  # PIL image (a video's first frame), or None when text-only
    problem: str = ""  # why the image could not be read (then only its text is checked)


@dataclass
class Reference:
    """Features of every evaluation item, in item order (rows of the arrays)."""

    items: list[EvalItem]
    digests: dict[str, int]  # exact image hash -> item index
    phashes: np.ndarray  # uint64 per item with an image
    phash_items: np.ndarray  # item index of each phash
    vectors: np.ndarray  # float32 (M, dim) CLIP embeddings of the items with an image
    vector_items: np.ndarray  # item index of each vector
    ngrams: dict[int, int]  # n-gram key -> first item index holding it
    seconds: float = 0.0
    vocab: Any = None  # Arrow array of every evaluation question token
    gram_hashes: np.ndarray | None = None  # sorted window hashes (``window_hashes``)
    gram_items: np.ndarray | None = None  # item of each hash


def build_reference(
    items: list[EvalItem],
    cfg: DecontaminateConfig,
    embed: Callable[[list[Any]], np.ndarray] | None,
) -> Reference:
    """Hashes, perceptual hashes, CLIP vectors (``embed(images)``) and n-grams of ``items``."""
    start = time.perf_counter()
    with_image = [i for i, it in enumerate(items) if it.image is not None]
    digests: dict[str, int] = {}
    for i in with_image:
        digests.setdefault(image_digest(items[i].image), i)
    hashes = [perceptual_hash(items[i].image) for i in with_image]
    phashes = np.array(hashes, dtype=np.int64).view(np.uint64)
    vectors = np.zeros((0, 0), np.float32)
    if embed is not None and "clip" in cfg.signals and with_image:
        parts = [
            embed([items[i].image for i in with_image[s : s + cfg.batch_size]])
            for s in range(0, len(with_image), cfg.batch_size)
        ]
        vectors = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    ngrams: dict[int, int] = {}
    for i, it in enumerate(items):
        for key in ngram_keys(it.question, cfg.ngram):
            ngrams.setdefault(key, i)
    idx = np.array(with_image, dtype=np.int64)
    ref = Reference(items, digests, phashes, idx, vectors, idx, ngrams)
    set_question_index(ref, cfg.ngram)
    ref.seconds = time.perf_counter() - start
    return ref


def set_question_index(ref: Reference, n: int) -> None:
    """The vectorised n-gram index of the reference's questions (vocab + sorted hashes)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tokens = question_tokens([it.question for it in ref.items])
    vocab = pc.unique(pc.list_flatten(tokens)) if len(ref.items) else pa.array([], pa.string())
    ref.vocab = vocab.filter(pc.not_equal(vocab, ""))
    rows, hashes = window_hashes(tokens, ref.vocab, n)
    order = np.argsort(hashes, kind="stable")
    ref.gram_hashes, ref.gram_items = hashes[order], rows[order]


# ---- screens -----------------------------------------------------------------------
@dataclass
class Matches:
    """Pool rows matched to evaluation items: parallel arrays, one entry per (row, signal)."""

    rows: list[np.ndarray] = field(default_factory=list)  # global pool row
    items: list[np.ndarray] = field(default_factory=list)  # evaluation item index
    scores: list[np.ndarray] = field(default_factory=list)  # distance / cosine / 1
    signals: list[str] = field(default_factory=list)  # one per array triple

    def add(self, signal: str, rows: Any, items: Any, scores: Any) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size:
            self.rows.append(rows)
            self.items.append(np.asarray(items, dtype=np.int64))
            self.scores.append(np.asarray(scores, dtype=np.float64))
            self.signals.append(signal)

    def flat(self) -> list[tuple[int, int, str, float]]:
        """(row, item, signal, score) sorted by row, then signal."""
        out = [
            (int(r), int(i), sig, float(s))
            for rows, items, scores, sig in zip(
                self.rows, self.items, self.scores, self.signals, strict=True
            )
            for r, i, s in zip(rows, items, scores, strict=True)
        ]
        return sorted(out, key=lambda m: (m[0], SIGNALS.index(m[2]), m[1]))

    def row_set(self) -> np.ndarray:
        return np.unique(np.concatenate(self.rows)) if self.rows else np.zeros(0, np.int64)


def hamming_matches(
    pool: np.ndarray, ref: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (pool index, ref index, distance) with Hamming distance <= ``max_distance``.

    Pigeonhole (multi-index hashing): cut the 64 bits into ``max_distance + 1`` bands;
    two hashes within the distance agree exactly on at least one band, so candidates
    are exact band joins (sort + searchsorted), verified with a popcount. Linear in the
    pool, never N x M.
    """
    pool = np.asarray(pool, dtype=np.uint64)
    ref = np.asarray(ref, dtype=np.uint64)
    if not len(pool) or not len(ref):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    edges = np.linspace(0, 64, max_distance + 2).astype(np.uint64)
    found_p, found_r = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = np.uint64((1 << int(hi - lo)) - 1)
        pk, rk = (pool >> lo) & mask, (ref >> lo) & mask
        order = np.argsort(rk, kind="stable")
        left = np.searchsorted(rk[order], pk, "left")
        counts = np.searchsorted(rk[order], pk, "right") - left
        hit = np.nonzero(counts)[0]
        if not hit.size:
            continue
        reps = counts[hit]
        pi = np.repeat(hit, reps)
        within = np.arange(len(pi)) - np.repeat(np.cumsum(reps) - reps, reps)
        rj = order[np.repeat(left[hit], reps) + within]
        close = np.bitwise_count(pool[pi] ^ ref[rj]) <= max_distance
        found_p.append(pi[close])
        found_r.append(rj[close])
    if not found_p:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    pairs = np.unique(np.stack([np.concatenate(found_p), np.concatenate(found_r)]), axis=1)
    dist = np.bitwise_count(pool[pairs[0]] ^ ref[pairs[1]]).astype(np.int64)
    return pairs[0].astype(np.int64), pairs[1].astype(np.int64), dist


def screen_hashes(
    start: int,
    image_hashes: Sequence[str | None],
    phashes: np.ndarray | None,
    phash_valid: np.ndarray | None,
    ref: Reference,
    cfg: DecontaminateConfig,
    out: Matches,
) -> None:
    """Exact and perceptual-hash matches of one part's rows (global rows from ``start``)."""
    if "exact" in cfg.signals and ref.digests:
        import pyarrow as pa
        import pyarrow.compute as pc

        hashes = image_hashes if isinstance(image_hashes, pa.Array) else pa.array(image_hashes)
        where = pc.index_in(hashes, value_set=pa.array(list(ref.digests), pa.string()))
        local = np.nonzero(np.asarray(where.is_valid(), dtype=bool))[0]
        items = np.array(list(ref.digests.values()), dtype=np.int64)
        picked = np.asarray(where.fill_null(0), dtype=np.int64)[local]
        out.add("exact", start + local, items[picked], np.ones(len(local)))
    if "phash" in cfg.signals and phashes is not None and len(ref.phashes):
        valid = np.nonzero(phash_valid)[0] if phash_valid is not None else np.arange(len(phashes))
        values = np.asarray(phashes[valid], dtype=np.int64).view(np.uint64)
        p, r, d = hamming_matches(values, ref.phashes, cfg.phash_distance)
        out.add("phash", start + valid[p], ref.phash_items[r], d)


def screen_questions(
    start: int, questions: Any, ref: Reference, cfg: DecontaminateConfig, out: Matches
) -> None:
    """N-gram matches of one part's questions (Arrow strings; the first shared n-gram
    names the item), vectorised: :func:`question_tokens` + :func:`window_hashes`."""
    if "ngram" not in cfg.signals or ref.gram_hashes is None or not len(ref.gram_hashes):
        return
    rows, hashes = window_hashes(question_tokens(questions), ref.vocab, cfg.ngram)
    pos = np.searchsorted(ref.gram_hashes, hashes)
    pos = np.minimum(pos, len(ref.gram_hashes) - 1)
    hit = ref.gram_hashes[pos] == hashes
    rows, pos = rows[hit], pos[hit]
    first_rows, first = np.unique(rows, return_index=True)
    out.add("ngram", start + first_rows, ref.gram_items[pos[first]], np.ones(len(first_rows)))


class ClipScreen:
    """CLIP near-duplicates, fed chunk by chunk during curation's streamed assignment.

    ``prepare(sample, centres)`` (once, after k-means) sets up the search; with
    ``center`` cosines are taken after subtracting the sample's mean m, by scoring
    ``[v, 1]`` against ``[e', -m.e']`` (e' the centred, normalised evaluation vector) and
    dividing by ``|v - m|``. ``visit(start, vectors, labels)`` is called from several
    threads (one per part) with each chunk and its rows' nearest centres, and keeps rows
    whose best cosine reaches the threshold.

    ``probes`` > 0 (IVF, the default): each evaluation vector is listed under its
    ``probes`` nearest centres, and a pool row is compared only with the evaluation
    vectors listed under its own centre: M * probes / k products per row instead of M.
    A near-duplicate (cosine >= 0.95) shares its nearest centre with the original unless
    both lie at a cluster boundary; ``probes = 0`` compares every row with every vector.
    """

    def __init__(self, ref: Reference, threshold: float, center: bool = False, probes: int = 0):
        self.ref, self.threshold, self.center, self.probes = ref, threshold, center, probes
        self.seconds = 0.0
        self.keys: np.ndarray | None = None  # evaluation vectors as searched
        self.mean: np.ndarray | None = None
        self.lists: dict[int, np.ndarray] = {}  # centre -> evaluation vectors probing it
        self.indexes: dict[int, Any] = {}  # centre -> faiss index of those vectors
        self._lock = threading.Lock()
        self.found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def prepare(self, sample: np.ndarray, centres: np.ndarray | None = None) -> None:
        e = self.ref.vectors
        if not len(e):
            return
        if self.center:
            self.mean = np.asarray(sample, np.float32).mean(axis=0)
            c = e - self.mean
            c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
            self.keys = np.ascontiguousarray(np.hstack([c, -(c @ self.mean)[:, None]]), np.float32)
        else:
            self.keys = np.ascontiguousarray(e, np.float32)
        if self.probes and centres is not None and self.probes < len(centres):
            near = np.argsort(-(e @ centres.T), axis=1)[:, : self.probes]
            for centre in np.unique(near):
                self.lists[int(centre)] = np.nonzero((near == centre).any(axis=1))[0]
        else:
            self.lists = {-1: np.arange(len(e))}
        self.indexes = {c: self._index(cand) for c, cand in self.lists.items()}

    def _index(self, cand: np.ndarray):
        """faiss's exact inner-product search (its BLAS honours one thread per part
        thread; numpy's threaded BLAS on small products oversubscribes the cores)."""
        import faiss

        index = faiss.IndexFlatIP(self.keys.shape[1])
        index.add(np.ascontiguousarray(self.keys[cand]))
        return index

    def _best(self, vectors: np.ndarray, centre: int) -> tuple[np.ndarray, np.ndarray]:
        """(best cosine, best evaluation vector) of each row among ``centre``'s list."""
        if self.mean is not None:
            query = np.hstack([vectors, np.ones((len(vectors), 1), np.float32)])
            norms = np.linalg.norm(vectors - self.mean, axis=1)
        else:
            query, norms = vectors, np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        sims, arg = self.indexes[centre].search(np.ascontiguousarray(query, np.float32), 1)
        return sims[:, 0] / np.maximum(norms, 1e-12), self.lists[centre][arg[:, 0]]

    def visit(self, start: int, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        if self.keys is None or not len(vectors):
            return
        t = time.perf_counter()
        if vectors.shape[1] != self.ref.vectors.shape[1]:
            raise ValueError(
                f"decontaminate: pool embedding dim {vectors.shape[1]} != the evaluation "
                f"images' {self.ref.vectors.shape[1]} (another embedder?)"
            )
        if -1 in self.lists or labels is None:
            groups = [(np.arange(len(vectors)), -1)]
        else:
            order = np.argsort(labels, kind="stable")
            values, first = np.unique(labels[order], return_index=True)
            bounds = np.append(first, len(order))
            groups = [
                (order[bounds[i] : bounds[i + 1]], int(c))
                for i, c in enumerate(values)
                if int(c) in self.lists
            ]
        found = []
        for rows, centre in groups:
            cos, best = self._best(vectors[rows], centre)
            hit = cos >= self.threshold
            if hit.any():
                found.append((start + rows[hit], self.ref.vector_items[best[hit]], cos[hit]))
        with self._lock:
            self.found += found
            self.seconds += time.perf_counter() - t

    def add_to(self, out: Matches) -> None:
        for rows, items, cos in self.found:
            out.add("clip", rows, items, cos)


# ---- summary -----------------------------------------------------------------------
def summarize(
    matches: Matches, ref: Reference, sample_ids: Callable[[np.ndarray], list[str]],
    selected: np.ndarray | None = None, set_names: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per evaluation set: items, matched pool rows (distinct) by signal, their ids.

    ``sample_ids(rows)`` maps global rows to pool ids; ``selected`` (sorted global rows
    of the selection) adds how many matched rows were selected.
    """
    flat = matches.flat()
    ids = dict(zip(sorted({m[0] for m in flat}), sample_ids(matches.row_set()), strict=True))
    names = list(dict.fromkeys([*set_names, *(it.set_name for it in ref.items)]))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [m for m in flat if ref.items[m[1]].set_name == name]
        rows = sorted({m[0] for m in mine})
        items = [it for it in ref.items if it.set_name == name]
        entry = {
            "eval_items": len(items),
            "eval_items_without_image": sum(it.image is None for it in items),
            "matched_rows": len(rows),
            "by_signal": {s: len({m[0] for m in mine if m[2] == s}) for s in SIGNALS},
            "pool_ids": [ids[r] for r in rows],
            "eval_ids": sorted({ref.items[m[1]].item_id for m in mine}),
        }
        if selected is not None:
            entry["selected_matched"] = int(np.isin(rows, selected).sum())
        out[name] = entry
    return out


def report_markdown(summary: dict[str, dict[str, Any]], cfg: DecontaminateConfig) -> str:
    """The report's decontamination table (one row per evaluation set)."""
    lines = [
        f"Decontamination ({cfg.mode}): exact image hash, pHash <= {cfg.phash_distance} bits, "
        f"CLIP cosine >= {cfg.clip_threshold}, question {cfg.ngram}-grams; signals "
        f"{', '.join(cfg.signals)}.",
        "",
        "| evaluation set | items | pool rows matched | exact | phash | clip | ngram |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        sig = s["by_signal"]
        lines.append(
            f"| {name} | {s['eval_items']} | {s['matched_rows']} | "
            + " | ".join(str(sig[k]) for k in SIGNALS)
            + " |"
        )
    return "\n".join(lines) + "\n"
