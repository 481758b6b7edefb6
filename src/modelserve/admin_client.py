"""The CLI's client for a running server's REST API (``modelserve models``, ``load``, ``alias``...).

Standard library only (urllib): the admin commands need no extra dependency. Errors come back as the
server's own ``{"error": ...}`` message.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["AdminClient", "AdminError"]


class AdminError(Exception):
    """The server answered with an error, or could not be reached, or what answered is not its REST API."""


# What to check when --url does not lead to a modelserve REST API (the usual slip: the gRPC port, 8001).
_CHECK_URL = (
    "check that --url is the server's REST address (http://HOST:PORT, default http://127.0.0.1:8000), not its gRPC port"
)


class AdminClient:
    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise AdminError(f"--url must be an http:// or https:// address, got '{url}'")
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self._url + path,
            data=data if method in ("POST", "PUT") else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310 (scheme checked)
                payload = response.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise AdminError(f"{exc.code}: {message}") from exc
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise AdminError(
                f"cannot reach {self._url} ({reason}): is the server running, and is --url its REST address "
                "(http://HOST:PORT, default http://127.0.0.1:8000)?"
            ) from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            # A port that speaks something else: gRPC's HTTP/2 answers an HTTP/1.1 request with a frame that
            # is no status line (BadStatusLine), or closes the connection (RemoteDisconnected).
            raise AdminError(f"{self._url} did not answer HTTP/1.1 ({type(exc).__name__}); {_CHECK_URL}") from exc
        except TimeoutError as exc:
            raise AdminError(f"{self._url} did not answer within {self._timeout_s:.0f} s; {_CHECK_URL}") from exc
        try:
            return json.loads(payload) if payload else None
        except ValueError as exc:
            raise AdminError(f"{self._url}{path} answered with something that is not JSON; {_CHECK_URL}") from exc

    @staticmethod
    def _quote(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("POST", "/v2/repository/index", {})
        return result

    def load(self, model: str) -> None:
        self._call("POST", f"/v2/repository/models/{self._quote(model)}/load", {})

    def unload(self, model: str) -> None:
        self._call("POST", f"/v2/repository/models/{self._quote(model)}/unload", {})

    def aliases(self, model: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v2/models/{self._quote(model)}/aliases")
        return result

    def set_alias(self, model: str, alias: str, version: str) -> dict[str, Any]:
        path = f"/v2/models/{self._quote(model)}/aliases/{self._quote(alias)}"
        result: dict[str, Any] = self._call("POST", path, {"version": version})
        return result

    def routing(self, model: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v2/models/{self._quote(model)}/routing")
        return result

    def set_routing(self, model: str, policy: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PUT", f"/v2/models/{self._quote(model)}/routing", policy)
        return result

    def clear_routing(self, model: str) -> None:
        self._call("DELETE", f"/v2/models/{self._quote(model)}/routing")

    def rollback(self, model: str, alias: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v2/models/{self._quote(model)}/rollback", {"alias": alias})
        return result
