"""Who may call the endpoint: bearer API keys and a per-key rate limit, as middleware on the
Serve app's FastAPI ingress.

- Off loopback (``serve.host`` not 127.0.0.1/::1/localhost) or with ``serve.require_auth``,
  the server refuses to start without keys (``serve.api_keys`` and/or ``serve.api_key_file``,
  one per line) — checked before Ray starts and before anything binds.
- Then every request but ``/healthz``, ``/openapi.json`` and ``/docs`` needs
  ``Authorization: Bearer <key>``: a missing or wrong key is a 401. Keys are kept only as
  SHA-256 digests, compared in constant time, and never echoed or logged.
- Each key has a token bucket of ``serve.rate_limit_burst`` requests refilled at
  ``serve.rate_limit_per_minute``; an empty bucket is a 429 with ``Retry-After``. The bucket
  lives in each agent replica, so with R replicas a key gets up to R times the rate.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

OPEN_PATHS = ("/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect")


class ServeAuthError(ValueError):
    """The endpoint's auth settings cannot work; said before anything starts."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_keys(api_keys: Sequence[str], key_file: Optional[str]) -> List[str]:
    keys = [k.strip() for k in api_keys if k and k.strip()]
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise ServeAuthError(f"serve.api_key_file not found: {path}")
        keys += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ServeAuthError(f"{len(short)} API key(s) shorter than 16 characters; use long random keys "
                             "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return keys


def keys_for_start(sc) -> List[str]:
    """The keys the endpoint will require (empty: no auth); raises when auth is needed and
    there are none."""
    keys = load_keys(sc.api_keys, sc.api_key_file)
    needed = sc.require_auth or not is_loopback(sc.host)
    if needed and not keys:
        why = "serve.require_auth is set" if sc.require_auth else f"serve.host {sc.host} is not a loopback address"
        raise ServeAuthError(f"refusing to start: {why} and no API key is configured; set serve.api_keys=[...] "
                             "or serve.api_key_file=FILE (clients send Authorization: Bearer <key>)")
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyGuard:
    def __init__(self, keys: Sequence[str], per_minute: float, burst: int, clock=time.monotonic):
        self.digests = [_digest(k) for k in keys]
        self.rate, self.burst, self.clock = per_minute / 60.0, float(burst), clock
        self.buckets: Dict[bytes, List[float]] = {}  # digest -> [tokens, last refill]
        self.lock = threading.Lock()

    def identify(self, authorization: Optional[str]) -> Optional[bytes]:
        """The digest of a valid key in the header, else None (constant time per key)."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        given = _digest(authorization[len("Bearer "):].strip())
        found = None
        for d in self.digests:
            if hmac.compare_digest(d, given):
                found = d
        return found

    def take(self, digest: bytes) -> float:
        """0 when the request may go; else the seconds until the bucket has a token."""
        with self.lock:
            now = self.clock()
            tokens, last = self.buckets.get(digest, [self.burst, now])
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self.buckets[digest] = [tokens - 1.0, now]
                return 0.0
            self.buckets[digest] = [tokens, now]
            return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf


def install(api, guard: KeyGuard) -> None:
    """The middleware, and the bearer scheme in ``/openapi.json``."""
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse

    @api.middleware("http")
    async def require_key(request, call_next):
        path, root = request.url.path, request.scope.get("root_path", "")  # an app under a route prefix
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        if path in OPEN_PATHS:
            return await call_next(request)
        digest = guard.identify(request.headers.get("authorization"))
        if digest is None:
            return JSONResponse({"error": "missing or wrong API key: send Authorization: Bearer <key>"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        wait = guard.take(digest)
        if wait > 0:
            return JSONResponse({"error": f"rate limit: at most {guard.rate * 60:g} requests per minute per key"},
                                status_code=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return await call_next(request)

    def openapi():
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key from serve.api_keys"}}
            for path, ops in schema.get("paths", {}).items():
                if path not in OPEN_PATHS:
                    for op in ops.values():
                        op["security"] = [{"bearerAuth": []}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi
