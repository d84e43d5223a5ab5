"""Helpers of the serving tests: images, a pixel bomb, a free port, pair rows."""

from __future__ import annotations

import base64
import socket
import zlib

from PIL import Image

from mmrlhf_ray.data.media import encode_png

TOKEN = "test-token-123"


def png_bytes(color=(255, 0, 0), size=(32, 32)) -> bytes:
    return encode_png(Image.new("RGB", size, color))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixel_bomb(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` (decoding would explode)."""
    raw = png_bytes(size=(1, 1))
    ihdr = bytearray(raw[16:29])  # 8-byte signature, 4-byte length, b"IHDR", 13 bytes of data
    ihdr[0:4], ihdr[4:8] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    crc = zlib.crc32(b"IHDR" + bytes(ihdr)).to_bytes(4, "big")
    return raw[:16] + bytes(ihdr) + crc + raw[33:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pair(qid, better, worse, **kw):
    row = {
        "pair_id": f"{qid}:{better}>{worse}",
        "query_id": qid,
        "question": f"question of {qid}",
        "chosen_id": f"{qid}/{better}",
        "rejected_id": f"{qid}/{worse}",
        "chosen": f"answer {better}",
        "rejected": f"answer {worse}",
        "category": "short",
    }
    return {**row, **kw}


def all_pairs(qid, k, **kw):
    """Every pair of K ranked responses r0 > r1 > ... (C(K, 2) rows)."""
    return [pair(qid, f"r{i}", f"r{j}", **kw) for i in range(k) for j in range(i + 1, k)]
