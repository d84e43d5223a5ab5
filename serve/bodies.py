"""Request bodies read whole and counted, for both web surfaces (the scoring service,
``serve/app.py``, and the annotation app, ``serve/annotate_app.py``).

``Content-Length`` alone caps nothing: a chunked body has none. So a middleware reads the
body itself, counting bytes up to its limit, before any route or form parser sees it,
and hands the route a ``receive`` that replays what was read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]


def declared_length(value: str | None, limit: int) -> str | None:
    """What is wrong with a declared ``Content-Length`` (ASCII digits only, at most
    ``limit``), or None."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        return "not a decimal number"
    return f"body exceeds {limit} bytes" if int(value) > limit else None


async def read_capped(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None if the client went away; ``OverflowError`` past ``limit``
    bytes (counted as they arrive, chunked bodies included)."""
    body, more = bytearray(), True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            raise OverflowError(f"body exceeds {limit} bytes")
    return bytes(body)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the client sends next."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
