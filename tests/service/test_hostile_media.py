"""Hostile media on the scoring service (issue 21, item 1): a per-request pixel budget
read from the headers before anything is decoded, PNG and JPEG only (no other Pillow
plugin parses request bytes), decoding that downsizes, and a 4xx naming the field for
each mistake."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from mmrlhf_ray.data.media import MediaError, decode_image
from mmrlhf_ray.service.config import ServeLimits
from mmrlhf_ray.service.server import RequestError, resolve_compare_request, resolve_score_request
from mmrlhf_ray.service.wire import CompareRequest, ScoreRequest
from tests.serve.helpers import b64, pixel_bomb

ROOT = Path(__file__).resolve().parents[2]
SIDE = 2048


def _one_bit_png(side: int = SIDE) -> bytes:
    """A real side x side one-bit PNG: a few KB that decode to side^2 x 3 bytes of RGB."""
    buf = io.BytesIO()
    Image.new("1", (side, side), 1).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _refused(body: dict, limits: ServeLimits, kind=ScoreRequest) -> RequestError:
    resolve = resolve_score_request if kind is ScoreRequest else resolve_compare_request
    with pytest.raises(RequestError) as info:
        resolve(kind.model_validate(body), limits)
    return info.value


def test_the_request_budget_is_checked_from_headers_before_any_decoding():
    """Each frame claims 2048 x 2048 but holds one pixel of data: decoding any of them
    would fail (422, 'not decodable'). The 413 naming the frame that crosses the budget
    shows none was decoded."""
    frame = b64(pixel_bomb(SIDE, SIDE))
    limits = ServeLimits(max_pixels=SIDE * SIDE, max_request_pixels=7 * SIDE * SIDE)
    body = {"items": [{"question": "q", "response": "a", "video_frames": [frame] * 8}]}
    err = _refused(body, limits)
    assert (err.field, err.status) == ("items[0].video_frames[7]", 413)
    assert "request budget" in err.reason
    # across items too: the budget is per request, not per image
    items = [{"question": "q", "response": "a", "image": frame}] * 8
    assert _refused({"items": items}, limits).field == "items[7].image"
    cmp = {"question": "q", "video_frames": [frame] * 8, "responses": ["a"]}
    assert _refused(cmp, limits, CompareRequest).field == "video_frames[7]"
    # within the budget the same frames are decoded, and their missing data is the error
    assert _refused({"items": items[:7]}, limits).status == 422


def test_the_issues_request_is_refused_with_bounded_memory():
    """The issue's request: 64 items x 8 one-bit 2048 x 2048 PNGs (~1.6 MB of JSON) asked
    ~6.4 GB of RGB and took the replica's RSS from 1.2 to 9.5 GB. Resolved in a fresh
    process with the default limits it is a 413 before any decoding: the peak RSS grows by
    less than one decoded frame."""
    frame = b64(_one_bit_png())
    body = {"items": [{"question": "q", "response": "a", "video_frames": [frame] * 8}] * 64}
    script = textwrap.dedent(
        """
        import json, resource, sys
        from mmrlhf_ray.service.server import RequestError
        from mmrlhf_ray.service.config import ServeLimits
        from mmrlhf_ray.service.wire import ScoreRequest
        from mmrlhf_ray.service.server import resolve_score_request
        req = ScoreRequest.model_validate(json.loads(sys.stdin.read()))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            resolve_score_request(req, ServeLimits())
            print(json.dumps({"status": 200}))
        except RequestError as exc:
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            print(json.dumps({"status": exc.status, "field": exc.field, "grown_kb": grown}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    res = json.loads(out.stdout)
    assert res["status"] == 413 and res["field"].startswith("items[1].")  # 8 frames fit
    one_frame_rgb_kb = SIDE * SIDE * 3 // 1024  # 12,288 KB
    assert res["grown_kb"] < one_frame_rgb_kb  # the issue's run: +8.3 GB


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["EPS", "TIFF"])
def test_eps_and_tiff_bodies_are_refused(fmt):
    raw = _encoded(fmt)
    assert Image.open(io.BytesIO(raw)).format == fmt  # Pillow itself would parse them
    body = {"items": [{"question": "q", "response": "a", "image": b64(raw)}]}
    err = _refused(body, ServeLimits())
    assert (err.field, err.status, err.reason) == ("items[0].image", 422, "not a PNG or JPEG image")
    with pytest.raises(MediaError, match="not a PNG or JPEG"):
        decode_image(raw)


def test_png_and_jpeg_are_decoded_and_downsized_on_decode():
    big = io.BytesIO()
    Image.new("RGB", (1024, 512), (0, 0, 255)).save(big, format="JPEG")
    img = decode_image(big.getvalue(), max_side=128)
    assert img.size == (128, 64) and img.mode == "RGB"
    body = {"items": [{"question": "q", "response": "a", "image": b64(_one_bit_png(600))}]}
    (item,) = resolve_score_request(ScoreRequest.model_validate(body), ServeLimits(max_side=100))
    assert item.images[0].size == (100, 100) and item.images[0].mode == "RGB"


def test_a_nul_byte_in_an_image_path_is_a_422(tmp_path):
    limits = ServeLimits(allowed_roots=[str(tmp_path)])
    body = {"items": [{"question": "q", "response": "a", "image_path": "red\x00.png"}]}
    err = _refused(body, limits)
    assert (err.field, err.status) == ("items[0].image_path", 422) and "NUL" in err.reason
    with pytest.raises(MediaError, match="NUL"):
        decode_image(str(tmp_path / "a\x00b.png"))
