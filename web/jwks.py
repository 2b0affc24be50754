"""The signing keys of an identity provider (Auth0, Keycloak, Entra, Cognito): its JWKS document.

PyJWT's `PyJWKClient` fetches and parses the document (http(s) only, no redirects, a timeout); it does
blocking I/O, so it runs in a worker thread and never on the event loop. The parsed keys are cached here,
in one `JwksKeys` per URL, on the event loop: PyJWKClient's own cache is consulted under a thread lock, so
every lookup (and every made-up `kid`) would need a thread. Here:

- a known `kid` is answered from the cache without I/O while the keys are younger than
  `SWITCHBOARD_AUTH_JWKS_CACHE_SECONDS`;
- an unknown `kid`, or keys older than that, start a fetch, but **at most one fetch starts per
  `SWITCHBOARD_AUTH_JWKS_REFRESH_SECONDS`**, whatever arrives: concurrent lookups share the fetch in
  flight, and lookups between two permitted fetches are answered from the cache (an unknown `kid` is then
  refused at once, without I/O). A flood of tokens with made-up `kid`s costs the provider one request per
  interval;
- a failed fetch (timeout, HTTP error, not a JWKS) keeps the keys fetched before, so an outage of the
  provider does not log anybody out while their key is cached; it is logged, at most once per interval.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from jwt import PyJWK, PyJWKClient

from bus import Settings

log = logging.getLogger("switchboard.web")


class JwksKeys:
    """The keys of one JWKS URL, fetched off the event loop, cached, refreshed at a bounded rate."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float,
        cache_seconds: float,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.cache_seconds = cache_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        # PyJWKClient's own cache is off: the cache and the refresh bound are kept here, on the loop.
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout_seconds)
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._fetch: asyncio.Task[None] | None = None
        #: Fetches started (successful or not), for tests and metrics.
        self.fetches = 0

    @property
    def available(self) -> bool:
        """Whether a fetch ever succeeded (if not, every lookup fails: the provider is unreachable)."""
        return self._fetched_at is not None

    async def get(self, kid: str) -> PyJWK | None:
        """The key with id `kid`, or None if the provider (as last fetched) has no such key."""
        key = self._keys.get(kid)
        if key is not None and self._fresh():
            return key
        fetch = self._current_fetch()
        if fetch is None and self._may_fetch():
            self._attempted_at = self._clock()
            self.fetches += 1
            fetch = self._fetch = asyncio.get_running_loop().create_task(self._refresh())
        if fetch is not None:
            # Shielded: a caller that gives up (a client hanging up) does not cancel the shared fetch.
            await asyncio.shield(fetch)
        return self._keys.get(kid)

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self.cache_seconds

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or self._clock() - self._attempted_at >= self.refresh_seconds

    def _current_fetch(self) -> asyncio.Task[None] | None:
        fetch = self._fetch
        if fetch is None or fetch.done() or fetch.get_loop() is not asyncio.get_running_loop():
            return None
        return fetch

    async def _refresh(self) -> None:
        """Fetch the document in a thread (never raises: a failure keeps the keys we have)."""
        try:
            # The client's timeout bounds each socket operation; this bounds the whole fetch. A thread
            # that outlives it finishes on its own; at most one is started per refresh interval.
            signing_keys = await asyncio.wait_for(
                asyncio.to_thread(self._client.get_signing_keys, True), self.timeout_seconds
            )
        except Exception as exc:  # a network boundary: whatever the provider sends must not crash us
            log.warning(
                "could not fetch the identity provider's keys from %s (%s: %s); %s",
                self.url,
                type(exc).__name__,
                str(exc)[:200],
                "keeping the keys fetched before" if self._keys else "no keys yet",
            )
            return
        self._keys = {key.key_id: key for key in signing_keys if key.key_id}
        self._fetched_at = self._clock()
        log.info("fetched %d signing keys from %s", len(self._keys), self.url)


@functools.cache
def _keys(url: str, refresh: float, cache: float, timeout: float) -> JwksKeys:
    return JwksKeys(url, refresh_seconds=refresh, cache_seconds=cache, timeout_seconds=timeout)


def keys_for(settings: Settings) -> JwksKeys:
    """The process's key cache for the settings' JWKS URL (one per URL and timing settings)."""
    assert settings.auth_jwks_url is not None
    return _keys(
        settings.auth_jwks_url,
        settings.auth_jwks_refresh_seconds,
        settings.auth_jwks_cache_seconds,
        settings.auth_jwks_timeout_seconds,
    )
