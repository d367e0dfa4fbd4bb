"""Who may call the endpoint: API keys, the per-key rate limit, the start-up rule, over real
HTTP on 127.0.0.1 with the very middleware the Serve app installs."""
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from cluster.serve_auth import KeyGuard, ServeAuthError, install, keys_for_start
from cluster.web_pages import ServerThread

ROOT = Path(__file__).resolve().parents[2]
KEY = "k-0123456789abcdef-secret"


def _sc(**kw):
    base = {"host": "127.0.0.1", "api_keys": [], "api_key_file": None, "require_auth": False}
    return SimpleNamespace(**{**base, **kw})


def test_start_up_rule(tmp_path):
    assert keys_for_start(_sc()) == []  # loopback, nothing asked: open
    with pytest.raises(ServeAuthError, match="serve.host 0.0.0.0 is not a loopback address and no API key"):
        keys_for_start(_sc(host="0.0.0.0"))
    with pytest.raises(ServeAuthError, match="serve.require_auth is set"):
        keys_for_start(_sc(require_auth=True))
    with pytest.raises(ServeAuthError, match="shorter than 16"):
        keys_for_start(_sc(host="0.0.0.0", api_keys=["short"]))
    f = tmp_path / "keys"
    f.write_text(f"# ops team\n{KEY}\n\n")
    assert keys_for_start(_sc(host="0.0.0.0", api_key_file=str(f))) == [KEY]


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    g = KeyGuard([KEY], per_minute=60, burst=2, clock=lambda: now[0])
    d = g.identify(f"Bearer {KEY}")
    assert [g.take(d), g.take(d)] == [0.0, 0.0] and g.take(d) == pytest.approx(1.0)
    now[0] = 0.5
    assert g.take(d) == pytest.approx(0.5)
    now[0] = 1.0
    assert g.take(d) == 0.0
    assert g.identify("Bearer nope") is None and g.identify(KEY) is None and g.identify(None) is None


def _app(burst=3):
    api = FastAPI(title="t", version="1")

    @api.post("/v1/synthesize")
    def synthesize():
        return {"ok": True}

    @api.get("/healthz")
    def healthz():
        return {"ok": True}

    install(api, KeyGuard([KEY, "another-key-0000000000"], per_minute=60, burst=burst))
    return api


def test_keys_and_rate_limit_over_http(caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with ServerThread(_app()) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/healthz").status_code == 200  # stays open
        r = c.post("/v1/synthesize")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["error"]
        assert c.post("/v1/synthesize", headers={"Authorization": "Bearer wrong-key-000000000"}).status_code == 401
        ok = {"Authorization": f"Bearer {KEY}"}
        assert [c.post("/v1/synthesize", headers=ok).status_code for _ in range(3)] == [200, 200, 200]
        r = c.post("/v1/synthesize", headers=ok)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # the other key has its own bucket
        assert c.post("/v1/synthesize", headers={"Authorization": "Bearer another-key-0000000000"}).status_code == 200
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["bearerAuth"] == {
            "type": "http", "scheme": "bearer", "description": "an API key from serve.api_keys"}
        assert spec["paths"]["/v1/synthesize"]["post"]["security"] == [{"bearerAuth": []}]
        assert "security" not in spec["paths"]["/healthz"]["get"]
    out, err = capfd.readouterr()
    assert KEY not in out + err + caplog.text and "wrong-key" not in out + err + caplog.text  # keys never logged


def test_serve_off_loopback_without_keys_refuses_before_binding(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path / "ray"), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "refusing to start" in proc.stderr and "Traceback" not in proc.stderr
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "ray").exists()  # no Ray, nothing started
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", port))  # the port was never taken
