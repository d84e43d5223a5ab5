"""Fetching an image by URL for the reward service, when the operator allows it.

Off by default (``limits.allow_urls``). When on, a URL must be ``http(s)://host/...``;
``allowed_url_hosts`` (when given) is the only hosts fetched from, otherwise any host
whose addresses are all public (loopback, private, link-local and reserved addresses are
refused, so a client cannot make the service probe its own network). Redirects are not
followed (a public host could redirect inward); the body is streamed and cut off at
``max_bytes``. Every problem is a ``FetchError(reason, status)``.

The address check happens before the request and the HTTP library resolves the name
again, so a hostile DNS server could still answer differently the second time: on
shared networks, list the hosts you trust in ``allowed_url_hosts``.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

CHUNK = 64 << 10


class FetchError(ValueError):
    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.reason, self.status = reason, status


def check_url(url: str, allowed_hosts: list[str]) -> str:
    """The URL's host if the URL may be fetched, else ``FetchError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("only http(s) URLs with a host are fetched", 400)
    host = parts.hostname
    if allowed_hosts:
        if host not in allowed_hosts:
            raise FetchError(f"host {host!r} is not in allowed_url_hosts", 403)
        return host
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"host {host!r} does not resolve ({exc})", 422) from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise FetchError(f"host {host!r} resolves to a non-public address", 403)
    return host


def fetch_bytes(url: str, allowed_hosts: list[str], max_bytes: int, timeout_s: float) -> bytes:
    """GET ``url`` (checked by ``check_url``), at most ``max_bytes``, no redirects."""
    import requests

    check_url(url, allowed_hosts)
    try:
        with requests.get(url, stream=True, timeout=timeout_s, allow_redirects=False) as resp:
            if resp.is_redirect:
                raise FetchError(
                    f"HTTP {resp.status_code} redirect: redirects are not followed", 422
                )
            if resp.status_code != 200:
                raise FetchError(f"fetch returned HTTP {resp.status_code}", 422)
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"image exceeds {max_bytes} bytes", 413)
            body = bytearray()
            for chunk in resp.iter_content(CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"image exceeds {max_bytes} bytes", 413)
    except requests.RequestException as exc:
        raise FetchError(f"could not fetch ({type(exc).__name__})", 422) from exc
    if not body:
        raise FetchError("empty body", 422)
    return bytes(body)
