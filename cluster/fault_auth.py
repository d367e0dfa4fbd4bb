"""Who may call the endpoint, asked of the real Serve app over HTTP on 127.0.0.1 with
``serve.require_auth=true``: requests without a valid key must all be refused (401), a
valid key must work, and a key past its burst gets 429 with ``Retry-After``.
``unauthorized_accepted`` in ``bench faults`` counts refused-should-be requests that got a 2xx."""
from __future__ import annotations

import copy
from typing import Any, Dict

KEY = "faults-bench-key-0123456789abcdef"
ATTEMPTS = {  # name -> headers / params of a request that must not get in
    "no_header": {},
    "wrong_key": {"headers": {"Authorization": "Bearer not-the-key-0123456789abcd"}},
    "basic_scheme": {"headers": {"Authorization": f"Basic {KEY}"}},
    "bare_key": {"headers": {"Authorization": KEY}},
    "key_in_query": {"params": {"api_key": KEY}},
    "key_prefix": {"headers": {"Authorization": f"Bearer {KEY[:-1]}"}},
    "empty_bearer": {"headers": {"Authorization": "Bearer"}},
}


def auth_check(cfg, policy: str) -> Dict[str, Any]:
    import httpx
    from ray import serve

    from cluster.fault_serve import pill_request, serve_on_free_port

    cfg = copy.deepcopy(cfg)
    cfg.serve.require_auth, cfg.serve.api_keys = True, [KEY]
    cfg.serve.rate_limit_burst, cfg.serve.rate_limit_per_minute = 2, 1
    body = pill_request()
    url = serve_on_free_port(cfg, policy, name="auth", route_prefix="/auth")
    try:
        with httpx.Client(timeout=120) as c:
            refused = {name: c.post(url + "/v1/synthesize", json=body, **kw).status_code for name, kw in ATTEMPTS.items()}
            ok = {"Authorization": f"Bearer {KEY}"}
            valid = [c.post(url + "/v1/synthesize", json=body, headers=ok).status_code for _ in range(2)]
            limited = c.post(url + "/v1/synthesize", json=body, headers=ok)
            health = c.get(url + "/healthz")
            health = health.status_code if health.status_code == 200 else (health.status_code, health.text[:300])
    finally:
        serve.shutdown()  # the next user starts Serve on its own port
    return {"refused": refused, "unauthorized_accepted": sum(200 <= v < 300 for v in refused.values()),
            "not_401": sorted(n for n, v in refused.items() if v != 401), "valid_key": valid,
            "over_burst": limited.status_code, "over_burst_retry_after": limited.headers.get("retry-after"),
            "healthz_open": health == 200, "healthz": health}
