"""The encoding contract: the settings that decide which tokens a log-prob is taken over.

Reference log-probs are computed once (``ref-logps``) and reused by ``train-dpo``; the
two must see the same inputs, or every long response and every video pair starts
training with a non-zero log-ratio ``h``. ``EncodingSettings`` is that contract: the
truncation and frame settings of the stage config, and fingerprints of what else shapes
the tokens (the processor's image/video resolution and tiling, the chat template, the
tokenizer) and of the reference model itself.

    mine = EncodingSettings.of(policy_dir, max_response_tokens=256, max_frames=4)
    out.finish(..., encoding=mine.to_dict())                    # ref-logps
    require_same_encoding(mine, manifest["encoding"], "train-dpo", "ref-logps")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# Files of a Hugging Face directory that fix image/video preprocessing, and the tokenizer.
IMAGE_FILES = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
_EDGE = 1 << 20  # bytes read from each end of a weight file for its fingerprint


class EncodingMismatch(ValueError):
    """Two stages would encode the same pair differently."""


def _digest(chunks: list[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()[:16]


def _files_digest(root: Path, names: tuple[str, ...]) -> str:
    chunks = []
    for name in names:
        path = root / name
        if path.is_file():
            chunks += [name.encode(), _normalised(path)]
    return _digest(chunks) if chunks else "none"


def _normalised(path: Path) -> bytes:
    """A file's bytes; JSON without volatile keys (transformers version, file names)."""
    raw = path.read_bytes()
    if path.suffix != ".json":
        return raw
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(data, dict):
        for key in (
            "transformers_version",
            "name_or_path",
            "_name_or_path",
            "processor_class",
            "chat_template",
        ):
            data.pop(key, None)
    return json.dumps(data, sort_keys=True).encode()


def chat_template_digest(root: Path) -> str:
    """The chat template wherever the directory keeps it (own file or tokenizer_config)."""
    chunks = [(root / n).read_bytes() for n in TEMPLATE_FILES if (root / n).is_file()]
    for name in ("tokenizer_config.json", "processor_config.json"):
        path = root / name
        if path.is_file():
            template = json.loads(path.read_text()).get("chat_template")
            if template:
                chunks.append(json.dumps(template, sort_keys=True).encode())
    return _digest(chunks) if chunks else "none"


def model_digest(root: Path) -> str:
    """Fingerprint of a checkpoint: its config and, per safetensors file, the size, the
    header (names, shapes, offsets) and the first and last MiB of weights. Cheap on a 7B
    checkpoint; changes whenever training wrote new weights."""
    chunks = [_normalised(root / "config.json")] if (root / "config.json").is_file() else []
    for path in sorted(root.glob("*.safetensors")):
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(_EDGE)
            f.seek(max(0, size - _EDGE))
            tail = f.read(_EDGE)
        chunks += [path.name.encode(), str(size).encode(), head, tail]
    return _digest(chunks) if chunks else "none"


@dataclass(frozen=True)
class EncodingSettings:
    """Everything that decides the tokens and pixels a response's log-prob is taken over."""

    max_response_tokens: int  # responses truncated to this many tokens
    max_frames: int  # video frames per query
    architecture: str  # config.json model_type of the model (e.g. qwen2_vl)
    image_processing: str  # fingerprint of the image/video processor configs (size, tiling)
    chat_template: str  # fingerprint of the chat template
    tokenizer: str  # fingerprint of the tokenizer files
    model: str  # fingerprint of the reference / start checkpoint

    @classmethod
    def of(
        cls, policy_dir: str | Path, max_response_tokens: int, max_frames: int
    ) -> EncodingSettings:
        """The settings of encoding with the model and processor saved in ``policy_dir``."""
        root = Path(policy_dir)
        config = root / "config.json"
        arch = json.loads(config.read_text()).get("model_type", "?") if config.is_file() else "?"
        return cls(
            max_response_tokens=int(max_response_tokens),
            max_frames=int(max_frames),
            architecture=str(arch),
            image_processing=_files_digest(root, IMAGE_FILES),
            chat_template=chat_template_digest(root),
            tokenizer=_files_digest(root, TOKENIZER_FILES),
            model=model_digest(root),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: EncodingSettings | dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """``(field, mine, theirs)`` for every field that differs."""
        theirs = other if isinstance(other, dict) else asdict(other)
        return [
            (f.name, getattr(self, f.name), theirs.get(f.name))
            for f in fields(self)
            if getattr(self, f.name) != theirs.get(f.name)
        ]


def require_same_encoding(
    mine: EncodingSettings,
    theirs: dict[str, Any] | None,
    me: str = "train-dpo",
    them: str = "ref-logps",
) -> None:
    """Raise ``EncodingMismatch`` (one line naming both values) unless the settings agree."""
    if not theirs:
        raise EncodingMismatch(
            f"{me}: {them}'s manifest records no encoding settings (written by an older "
            f"version): re-run {them}"
        )
    diffs = mine.differences(theirs)
    if diffs:
        said = "; ".join(f"{name} {a!r} ({me}) vs {b!r} ({them})" for name, a, b in diffs)
        raise EncodingMismatch(
            f"{me}: encoding differs from {them}'s, reference log-probs would be taken over "
            f"other inputs: {said}"
        )
