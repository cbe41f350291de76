"""One HTTP connection to Ghost, and the one place its failures become one-line `ClientError`s."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ghost.client.settings import ClientSettings
from ghost.errors import GhostError

SESSION_HEADER = "X-Ghost-Session"


class ClientError(GhostError):
    """A failure the user should read as one line (printed as `ghost: <message>`, exit 1)."""


class GhostConnection:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        headers = {SESSION_HEADER: settings.session}
        if key := settings.resolved_key():
            headers["X-Ghost-Key"] = key
        timeout = httpx.Timeout(settings.client_timeout, connect=settings.client_connect_timeout)
        # Ghost is addressed directly; an HTTP(S)_PROXY meant for the internet must not capture it.
        self.http = httpx.Client(base_url=settings.base_url, headers=headers, timeout=timeout,
                                 trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "GhostConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed request whose non-2xx answers and transport failures raise ClientError."""
        with self.translated(), self.http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise ClientError(describe_refusal(response, self.settings.base_url))
            yield response

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        with self.stream(method, path, **kwargs) as response:
            response.read()
            try:
                return response.json()
            except ValueError as exc:
                raise ClientError(f"Ghost sent a reply that is not JSON on {path}") from exc

    @contextmanager
    def translated(self) -> Iterator[None]:
        url = self.settings.base_url
        try:
            yield
        except httpx.ConnectError as exc:
            raise ClientError(f"cannot reach Ghost at {url}: is `ghost serve` running?") from exc
        except httpx.TimeoutException as exc:
            raise ClientError(f"Ghost at {url} did not answer in time ({type(exc).__name__})") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise ClientError(f"the connection to Ghost at {url} broke: {exc or type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise ClientError(f"talking to Ghost at {url} failed: {exc or type(exc).__name__}") from exc


def error_message(response: httpx.Response) -> str:
    """The message of Ghost's error shape, or the start of whatever body came back."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(error, dict):
        return str(error.get("message", "")) or response.reason_phrase
    return str(error or response.reason_phrase)


def describe_refusal(response: httpx.Response, url: str) -> str:
    message = error_message(response)
    if response.status_code == 401:
        return (f"Ghost at {url} refused the API key (set --api-key or GHOST_API_KEY; `ghost key` on "
                "Ghost's machine prints the generated one)")
    if response.status_code == 413:
        return f"too large for Ghost: {message}"
    if response.status_code == 404:
        return f"not found: {message}"
    return f"Ghost answered {response.status_code}: {message}"
