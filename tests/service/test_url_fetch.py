"""image_url with allow_urls: fetched from a real HTTP server on 127.0.0.1, within limits;
private addresses, redirects, big bodies and bad schemes refused with the field named."""

from __future__ import annotations

import http.server
import threading

import pytest

from mmrlhf_ray.service.config import ServeLimits
from mmrlhf_ray.service.server import RequestError, resolve_score_request
from mmrlhf_ray.service.url_fetch import FetchError, check_url
from mmrlhf_ray.service.wire import ScoreRequest
from tests.serve.helpers import pixel_bomb, png_bytes

PNG = png_bytes(size=(24, 12))
BOMB = pixel_bomb(50_000, 50_000)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        routes = {"/ok.png": (200, PNG), "/big.png": (200, b"\0" * 5000), "/bomb.png": (200, BOMB)}
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok.png")
            self.end_headers()
            return
        status, body = routes.get(self.path, (404, b"no"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _resolve(url: str, **limits):
    body = {"items": [{"question": "q", "response": "a", "image_url": url}]}
    return resolve_score_request(ScoreRequest.model_validate(body), ServeLimits(**limits))


def _refusal(url: str, **limits) -> tuple[str, int, str]:
    with pytest.raises(RequestError) as info:
        _resolve(url, **limits)
    return info.value.field, info.value.status, info.value.reason


def test_allowed_host_is_fetched_and_decoded(server):
    (item,) = _resolve(f"{server}/ok.png", allow_urls=True, allowed_url_hosts=["127.0.0.1"])
    assert [im.size for im in item.images] == [(24, 12)]


def test_refusals_name_the_field_with_the_right_status(server):
    ok = {"allow_urls": True, "allowed_url_hosts": ["127.0.0.1"]}
    assert _refusal(f"{server}/ok.png")[:2] == ("items[0].image_url", 400)  # off by default
    # Without an allow-list, loopback is refused before any request is made.
    field, status, reason = _refusal(f"{server}/ok.png", allow_urls=True)
    assert (field, status) == ("items[0].image_url", 403) and "non-public" in reason
    assert (
        _refusal(f"{server}/ok.png", allow_urls=True, allowed_url_hosts=["example.org"])[1] == 403
    )
    assert _refusal(f"{server}/missing.png", **ok)[1:] == (422, "fetch returned HTTP 404")
    assert "redirects are not followed" in _refusal(f"{server}/moved", **ok)[2]
    assert _refusal(f"{server}/big.png", max_image_bytes=4096, **ok)[1] == 413
    assert _refusal(f"{server}/bomb.png", **ok)[1] == 422  # as for base64: too many pixels
    assert _refusal("file:///etc/passwd", **ok)[1] == 400
    assert _refusal("http://127.0.0.1:1/x.png", **ok)[1] == 422  # nothing listening


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]/x", "http://localhost/x"],
)
def test_private_and_link_local_addresses_are_refused(url):
    with pytest.raises(FetchError) as info:
        check_url(url, [])
    assert info.value.status == 403
