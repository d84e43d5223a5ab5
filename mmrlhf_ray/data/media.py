"""Decoding images and video frames from bytes or paths, with size limits.

Every stage that looks at pixels goes through here, so limits and errors are the same
everywhere: a bad image raises ``MediaError`` naming the field, which stages turn into
a quarantined row.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from PIL import Image

MAX_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding
FORMATS = ("PNG", "JPEG")  # the only Pillow plugins that ever parse our input
VIDEO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class MediaError(ValueError):
    """An image or video could not be read; ``field`` names the offending column."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _source(data: bytes | str | Path, field: str) -> Any:
    if isinstance(data, bytes):
        return io.BytesIO(data)
    if "\x00" in str(data):
        raise MediaError(field, "path contains a NUL character")
    try:
        return open(data, "rb")
    except OSError as exc:
        raise MediaError(field, f"cannot open {data!s}: {exc.strerror}") from exc


def _open(source: Any, field: str, max_pixels: int) -> Image.Image:
    """Headers only: PNG or JPEG, at most ``max_pixels``; nothing decoded yet."""
    try:
        img = Image.open(source, formats=FORMATS)
    except Image.UnidentifiedImageError as exc:
        raise MediaError(field, "not a PNG or JPEG image") from exc
    except Exception as exc:  # PIL raises many types for corrupt headers (and its own bombs)
        raise MediaError(field, f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    if img.width * img.height > max_pixels:
        raise MediaError(field, f"{img.width}x{img.height} exceeds {max_pixels} pixels")
    return img


def image_size(data: bytes | str | Path, field: str = "image", max_pixels: int = MAX_PIXELS):
    """(width, height) from the headers of a PNG or JPEG, without decoding its pixels."""
    with _source(data, field) as source:
        return _open(source, field, max_pixels).size


def decode_image(
    data: bytes | str | Path,
    field: str = "image",
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = None,
) -> Image.Image:
    """Decode a PNG or JPEG (bytes or a path) into RGB, downsized to ``max_side`` on decode.

    Only the PNG and JPEG plugins parse the bytes (no EPS, TIFF, JPEG 2000, ...); the pixel
    count is read from the headers and refused before decoding; a JPEG decodes at a
    reduced scale when ``max_side`` allows (``draft``), so a large one never exists in full.
    """
    with _source(data, field) as source:
        img = _open(source, field, max_pixels)
        try:
            if max_side and max(img.size) > max_side and img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
        except Exception as exc:  # PIL raises many types for corrupt data
            raise MediaError(field, f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return img


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def frame_paths(folder: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not paths:
        raise MediaError("video_path", f"no frames in {folder}")
    return paths


def sample_uniform(items: list, n: int) -> list:
    """``n`` items spread uniformly over ``items`` (all of them if there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1) if n > 1 else 0
    return [items[round(i * step)] for i in range(n)]


def row_images(
    row: dict[str, Any],
    max_frames: int = 10,
    max_side: int | None = None,
    first_frame_only: bool = False,
) -> list[Image.Image]:
    """The images of a pool/record/pair row: [image] or the video's frames (or []).

    ``first_frame_only`` stands a video's first frame in for the video (curation).
    """
    if row.get("image") is not None:
        return [decode_image(row["image"], "image", max_side=max_side)]
    if row.get("image_path"):
        return [decode_image(row["image_path"], "image_path", max_side=max_side)]
    frames: list[Any] = list(row.get("video_frames") or [])
    field = "video_frames"
    if not frames and row.get("video_path"):
        frames, field = frame_paths(row["video_path"]), "video_path"
    if first_frame_only:
        frames = frames[:1]
    return [decode_image(f, field, max_side=max_side) for f in sample_uniform(frames, max_frames)]


def path_under_root(path: str, root: str, field: str) -> str:
    """``path`` if, resolved (symlinks followed, ``..`` applied), it lies under ``root``;
    else ``MediaError`` naming ``field``. An empty ``root`` is the working directory.

    For media paths read from a file someone else wrote (a release's ``data.jsonl``, a
    pool): without this an ``"image": "/home/lead/.aws/credentials"`` is read, stored and
    shown. A URI root (``s3://...``) takes paths under it with no ``..`` segment.
    """
    if "\x00" in path:
        raise MediaError(field, "path contains a NUL character")
    if "://" in root:
        prefix = root.rstrip("/") + "/"
        rest = path[len(prefix) :] if path.startswith(prefix) else None
        if rest is None or ".." in rest.split("/"):
            raise MediaError(field, f"{path!r} is outside the media root {root!r}")
        return path
    if "://" in path:
        raise MediaError(field, f"{path!r} is a URI outside the media root {root or '.'!r}")
    real_root = os.path.realpath(root or ".")
    real = os.path.realpath(os.path.join(real_root, path))
    if os.path.commonpath([real, real_root]) != real_root:
        raise MediaError(field, f"{path!r} resolves outside the media root {root or '.'!r}")
    return path


def checked_media_bytes(path: str | Path, field: str, max_bytes: int) -> bytes:
    """The bytes of a media file if it is at most ``max_bytes`` and a PNG or JPEG whose
    headers are within ``MAX_PIXELS`` (checked before anything is stored)."""
    try:
        size = os.path.getsize(path)
    except (OSError, ValueError) as exc:
        raise MediaError(field, f"cannot read {path!s}") from exc
    if size > max_bytes:
        raise MediaError(field, f"{path!s} is {size} bytes, over {max_bytes}")
    data = Path(path).read_bytes()[: max_bytes + 1]
    image_size(data, field)
    return data


def is_video(row: dict[str, Any]) -> bool:
    """The one rule for "is this row a video?": no image (bytes or path) and some frames
    (``video_frames``) or a frame folder (``video_path``). Its media are then the frames
    of one video, never separate images."""
    return (
        row.get("image") is None
        and not row.get("image_path")
        and bool(row.get("video_frames") or row.get("video_path"))
    )
