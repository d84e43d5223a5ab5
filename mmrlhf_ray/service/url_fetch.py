"""Fetching an image by URL for the reward service, when the operator allows it.

Off by default (``limits.allow_urls``). When on, a URL must be ``http(s)://host/...``;
``allowed_url_hosts`` (when given) is the only hosts fetched from, otherwise any host
whose addresses are all public (loopback, private, link-local and reserved addresses are
refused, so a client cannot make the service probe its own network). Redirects are not
followed (a public host could redirect inward); the body is cut off at ``max_bytes``.
Every problem is a ``FetchError(reason, status)``.

Hostile hosts and servers:

* the name is resolved once and the connection goes to the very address that was
  checked (``http.client`` on a socket we connect; TLS still verifies the host name), so
  a DNS server answering a public address and then a loopback one (rebinding) gets
  nothing;
* ``timeout_s`` is a deadline for the whole fetch (connect, headers, body): a server
  that drips one byte every few seconds is cut when it passes, its socket shut;
* fetches run on their own bounded pool (``MAX_FETCHES`` at once, more are refused with
  429), never on the threads that score;
* nothing comes from the environment: no ``HTTP(S)_PROXY``, no ``.netrc``.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

CHUNK = 64 << 10
MAX_FETCHES = 8  # fetches in flight per process; more are refused (429)
Resolver = Callable[[str, int], list[str]]
_POOL = ThreadPoolExecutor(max_workers=MAX_FETCHES, thread_name_prefix="url-fetch")
_SLOTS = threading.BoundedSemaphore(MAX_FETCHES)


class FetchError(ValueError):
    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.reason, self.status = reason, status


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, once)."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def check_url(
    url: str, allowed_hosts: list[str], resolver: Resolver | None = None
) -> tuple[str, int, str]:
    """(host, port, address to connect to) if the URL may be fetched, else ``FetchError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("only http(s) URLs with a host are fetched", 400)
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError(f"bad port in URL ({exc})", 400) from exc
    if allowed_hosts and host not in allowed_hosts:
        raise FetchError(f"host {host!r} is not in allowed_url_hosts", 403)
    try:
        addresses = (resolver or system_resolver)(host, port)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"host {host!r} does not resolve ({exc})", 422) from exc
    if not addresses:
        raise FetchError(f"host {host!r} does not resolve", 422)
    if not allowed_hosts:  # any host, if every address it has is public
        for value in addresses:
            if not ipaddress.ip_address(value.split("%")[0]).is_global:
                raise FetchError(f"host {host!r} resolves to a non-public address", 403)
    return host, port, addresses[0]


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to ``address`` (already checked) for ``host``."""

    def __init__(self, host: str, port: int, address: str, tls: bool, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address, self.tls = address, tls

    def connect(self) -> None:
        # self.sock is set before the TLS handshake, so the watchdog can cut a slow one too
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        if self.tls:
            context = ssl.create_default_context()
            self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


def _shut(conn: _PinnedConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _get(url: str, target: tuple[str, int, str], max_bytes: int, timeout_s: float) -> bytes:
    """GET over a pinned connection; the watchdog shuts its socket at the deadline."""
    host, port, address = target
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout_s
    conn = _PinnedConnection(host, port, address, parts.scheme == "https", timeout_s)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _shut(conn)

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("GET", path, headers={"Host": parts.netloc, "Accept": "image/*"})
        resp = conn.getresponse()
        if 300 <= resp.status < 400:
            raise FetchError(f"HTTP {resp.status} redirect: redirects are not followed", 422)
        if resp.status != 200:
            raise FetchError(f"fetch returned HTTP {resp.status}", 422)
        declared = resp.getheader("Content-Length") or ""
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"image exceeds {max_bytes} bytes", 413)
        body = bytearray()
        while chunk := _read(conn, resp, deadline):
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"image exceeds {max_bytes} bytes", 413)
        return bytes(body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, FetchError):
            raise
        if expired.is_set() or time.monotonic() >= deadline:
            raise FetchError(f"fetch exceeded its deadline of {timeout_s:g} s", 422) from exc
        raise FetchError(f"could not fetch ({type(exc).__name__})", 422) from exc
    finally:
        watchdog.cancel()
        conn.close()


def _read(conn: _PinnedConnection, resp: http.client.HTTPResponse, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline")
    if conn.sock is not None:
        conn.sock.settimeout(left)
    return resp.read1(CHUNK)


def fetch_bytes(
    url: str,
    allowed_hosts: list[str],
    max_bytes: int,
    timeout_s: float,
    resolver: Resolver | None = None,
) -> bytes:
    """GET ``url`` (checked by ``check_url``), at most ``max_bytes``, no redirects, within
    ``timeout_s`` in all, on the fetch pool."""
    target = check_url(url, allowed_hosts, resolver)
    if not _SLOTS.acquire(blocking=False):
        raise FetchError(f"{MAX_FETCHES} image fetches already in flight: retry later", 429)
    try:
        body = _POOL.submit(_get, url, target, max_bytes, timeout_s).result()
    finally:
        _SLOTS.release()
    if not body:
        raise FetchError("empty body", 422)
    return body
