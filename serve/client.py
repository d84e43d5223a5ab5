"""A small Python client of the reward service, over HTTP or over a Serve handle.

Both clients have the same methods and raise the same errors (from
``mmrlhf_ray.service.client``), so the ``score`` stage does not care how it reaches the
service:

* ``RequestRejected(status, field, reason)``: a 4xx; the input is wrong, do not retry;
* ``ServiceUnavailable``: 5xx, 429, timeout or connection error; retry with backoff.

Example::

    client = HttpRewardClient("http://127.0.0.1:8000", token=os.environ.get("RM_TOKEN"))
    client.compare({"question": "What colour is the circle?", "image": b64png,
                    "responses": ["Red.", "Blue."]})["margins"]
"""

from __future__ import annotations

from typing import Any

import requests

from mmrlhf_ray.service.client import RequestRejected, ServiceUnavailable


def _rejected(status: int, body: Any) -> RequestRejected:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return RequestRejected(status, str(err.get("field", "?")), str(err.get("reason", body))[:500])


class HttpRewardClient:
    """``POST /v1/score`` / ``/v1/compare`` and ``GET /healthz`` with one pooled session."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 120.0):
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _post(self, route: str, body: dict) -> dict:
        try:
            resp = self.session.post(f"{self.url}{route}", json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"POST {route}: {type(exc).__name__}: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = {"error": {"field": "", "reason": resp.text[:200]}}
        if resp.status_code == 429 or resp.status_code >= 500:
            raise ServiceUnavailable(f"POST {route}: HTTP {resp.status_code}: {str(data)[:300]}")
        if resp.status_code >= 400:
            raise _rejected(resp.status_code, data)
        return data

    def score(self, body: dict) -> dict:
        """``body`` = ``{"items": [...]}`` as in docs/API.md; returns the JSON answer."""
        return self._post("/v1/score", body)

    def compare(self, body: dict) -> dict:
        """``body`` = one question (+ media) and ``responses``; returns scores and margins."""
        return self._post("/v1/compare", body)

    def healthz(self) -> dict:
        try:
            resp = self.session.get(f"{self.url}/healthz", timeout=self.timeout_s)
            resp.raise_for_status()
            return resp.json()
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"GET /healthz: {exc}") from exc

    def close(self) -> None:
        self.session.close()


class HandleRewardClient:
    """The same calls through a Serve ``DeploymentHandle`` (inside the Ray cluster)."""

    def __init__(self, handle: Any, timeout_s: float = 120.0):
        self.handle, self.timeout_s = handle, timeout_s

    @classmethod
    def for_app(cls, app_name: str = "reward", timeout_s: float = 120.0) -> HandleRewardClient:
        from ray import serve

        return cls(serve.get_app_handle(app_name), timeout_s)

    def _call(self, method: str, body: dict) -> dict:
        try:
            data = getattr(self.handle, method).remote(body).result(timeout_s=self.timeout_s)
        except Exception as exc:  # replica death, timeout, actor errors: all retryable
            raise ServiceUnavailable(f"{method}: {type(exc).__name__}: {exc}") from exc
        if "error" in data:
            raise _rejected(int(data.get("status", 422)), data)
        return data

    def score(self, body: dict) -> dict:
        return self._call("score_json", body)

    def compare(self, body: dict) -> dict:
        return self._call("compare_json", body)

    def healthz(self) -> dict:
        return self.handle.healthz.remote().result(timeout_s=self.timeout_s)

    def close(self) -> None:
        pass
