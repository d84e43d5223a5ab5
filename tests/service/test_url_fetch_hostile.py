"""Hostile hosts and servers for image URLs (issue 21, item 5): DNS rebinding, a
slow-drip server, proxies from the environment. Real servers on 127.0.0.1; the resolver
is a function the test gives."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from mmrlhf_ray.service.url_fetch import FetchError, check_url, fetch_bytes
from tests.serve.helpers import png_bytes

PNG = png_bytes(size=(8, 8))


class Handler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Handler.hits.append(self.path)
        if self.path == "/drip":  # a valid start, then one byte at a time, for minutes
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100_000):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client hung up: done
                return
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_a_resolver_answering_public_then_loopback_is_refused(server):
    """Rebinding: the first answer (checked) is public, every later one is loopback,
    where our own server listens. The fetch connects to the checked address only: the
    loopback server never sees a request, and the resolver is asked once."""
    calls = []

    def rebinding(host, port):
        calls.append(host)
        return ["8.8.8.8"] if len(calls) == 1 else ["127.0.0.1"]

    before = len(Handler.hits)
    url = f"http://images.example:{server}/ok.png"
    with pytest.raises(FetchError):  # 8.8.8.8 at our server's port: no answer in 0.5 s
        fetch_bytes(url, [], 1 << 20, 0.5, resolver=rebinding)
    assert len(calls) == 1 and len(Handler.hits) == before
    # one answer holding a public and a loopback address: refused before connecting
    with pytest.raises(FetchError) as info:
        check_url(url, [], resolver=lambda h, p: ["8.8.8.8", "127.0.0.1"])
    assert info.value.status == 403 and "non-public" in info.value.reason


def test_the_fetch_connects_to_the_checked_address(server):
    """A name the resolver maps to 127.0.0.1 (allowed by name) is fetched from there,
    with the URL's host name in the request."""
    url = f"http://images.example:{server}/ok.png"
    body = fetch_bytes(url, ["images.example"], 1 << 20, 5.0, resolver=lambda h, p: ["127.0.0.1"])
    assert body == PNG


def test_a_slow_drip_server_is_cut_at_the_deadline(server):
    url = f"http://127.0.0.1:{server}/drip"
    with pytest.raises(FetchError) as info:
        fetch_bytes(url, ["127.0.0.1"], 1 << 20, 0.3)
    assert info.value.status == 422 and "deadline of 0.3 s" in info.value.reason


def test_proxies_from_the_environment_are_not_used(server, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch_bytes(f"http://127.0.0.1:{server}/ok.png", ["127.0.0.1"], 1 << 20, 5.0) == PNG
