"""The one way soc-async opens an HTTP session to a server: aiohttp, JSON, and the API
key as a bearer token when the run has one (vLLM's ``--api-key`` guards /v1 and, on some
deployments, /metrics and /server_info too), so no caller can forget it."""

from __future__ import annotations

import aiohttp

__all__ = ["open_session"]


def open_session(
    api_key: str | None,
    *,
    connector: aiohttp.BaseConnector | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
) -> aiohttp.ClientSession:
    """A session whose every request carries ``Authorization: Bearer api_key`` (when
    given) and a JSON content type; statuses are the caller's to read. ``timeout``
    defaults to aiohttp's own."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        # None: aiohttp's own default (5 minutes a request, 30 s to connect).
        timeout=timeout or aiohttp.client.DEFAULT_TIMEOUT,
        raise_for_status=False,
    )
