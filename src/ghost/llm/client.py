"""The upstream HTTP client (httpx) for embeddings, model discovery, token counts and health
(chat completions and the proxy go over `ghost.llm.transport`'s aiohttp session).

Its failures become Ghost's errors in `ghost.llm.transport_errors`.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from ghost.config import Settings


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
    )
    # The client is shared by every request: a cookie one proxied reply sets must never ride along
    # on another client's request, so the jar accepts none.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    # The upstream is a server we are configured to trust; never follow env proxies to reach it.
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False, cookies=no_cookies)
