"""Serve under load while replicas die: ``concurrency`` clients post for ``duration_s`` seconds;
a tool replica (image_gen) and the policy engine replica are each SIGKILLed once.

A request whose replica died is retried inside the agent (``serve_app.call_with_retry``) or
answered 503 with ``Retry-After``; a 500 is a failure. ``/healthz`` is polled throughout: it
must turn unhealthy (503) after a kill and healthy again. Figures are per phase, by when a
request started: ``before`` the first kill, ``during`` (until health is back after the last
kill) and ``after``.
"""
from __future__ import annotations

import asyncio
import copy
import os
import signal
import time
from typing import Any, Dict, List, Tuple

import numpy as np

KILLS = (("tool_image_gen", 0.2), ("policy", 0.55))  # deployment, when (share of the run)


def kill_replica(deployment: str, app: str = "anomalyagent") -> int:
    """SIGKILL the live replica process of ``deployment``; returns its pid."""
    from cluster.ray_session import live_actors

    name = f"ServeReplica:{app}:{deployment}"
    pids = [pid for cls, _, pid in live_actors() if cls == name]
    if not pids:
        raise RuntimeError(f"no live replica of {deployment!r}")
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def _phase_figures(rows: List[Tuple[float, int, float, bool]]) -> Dict[str, Any]:
    codes = [c for _, c, _, _ in rows]
    lat = np.array([t for _, c, t, _ in rows if c == 200] or [float("nan")])
    return {"requests": len(rows), "2xx": sum(200 <= c < 300 for c in codes), "4xx": sum(400 <= c < 500 for c in codes),
            "503": codes.count(503), "5xx": sum(c >= 500 and c != 503 for c in codes),
            "503_without_retry_after": sum(c == 503 and not ra for _, c, _, ra in rows),
            "p50_s": round(float(np.percentile(lat, 50)), 3), "p99_s": round(float(np.percentile(lat, 99)), 3)}


async def load_with_kills(url: str, body: dict, concurrency: int, duration_s: float,
                          kills=KILLS, health_every_s: float = 0.25) -> Dict[str, Any]:
    import httpx

    t0 = time.monotonic()
    deadline = t0 + duration_s
    rows: List[Tuple[float, int, float, bool]] = []  # start (s), status, seconds, Retry-After present
    health: List[Tuple[float, int]] = []
    killed: List[Dict[str, Any]] = []

    async with httpx.AsyncClient(timeout=300) as client:
        async def user():
            while time.monotonic() < deadline:
                start = time.monotonic()
                try:
                    r = await client.post(url + "/v1/synthesize", json=body)
                    code, ra = r.status_code, "retry-after" in r.headers
                except httpx.TransportError:
                    code, ra = 599, False  # the connection itself failed: counted as a 5xx
                rows.append((start - t0, code, time.monotonic() - start, ra))
                if code == 599:
                    await asyncio.sleep(0.5)  # a client's back-off, not a synchronization

        async def poll_health():
            while time.monotonic() < deadline:
                try:
                    code = (await client.get(url + "/healthz", timeout=10)).status_code
                except httpx.TransportError:
                    code = 599
                health.append((time.monotonic() - t0, code))
                await asyncio.sleep(health_every_s)  # a polling period, not a synchronization

        async def killer():
            for deployment, share in kills:
                await asyncio.sleep(max(0.0, t0 + share * duration_s - time.monotonic()))
                pid = await asyncio.to_thread(kill_replica, deployment)
                killed.append({"deployment": deployment, "at_s": round(time.monotonic() - t0, 1), "pid": pid})

        await asyncio.gather(*(user() for _ in range(concurrency)), poll_health(), killer())

    ends = [k["at_s"] for k in killed[1:]] + [duration_s]
    for k, end in zip(killed, ends):  # health in the window from this kill to the next
        window = [(t, c) for t, c in health if k["at_s"] <= t < end]
        down = next((t for t, c in window if c != 200), None)
        up = next((t for t, c in window if down is not None and t > down and c == 200), None)
        k.update(unhealthy=down is not None, healthy_again=up is not None,
                 recovered_s=round(up - k["at_s"], 1) if up is not None else None)
    first = killed[0]["at_s"] if killed else duration_s
    last_up = killed[-1]["at_s"] + killed[-1]["recovered_s"] if killed and killed[-1]["healthy_again"] else duration_s
    phases = {"before": [r for r in rows if r[0] < first], "during": [r for r in rows if first <= r[0] < last_up],
              "after": [r for r in rows if r[0] >= last_up]}
    return {"concurrency": concurrency, "duration_s": duration_s, "killed": killed,
            "health_ok_at_end": bool(health) and health[-1][1] == 200,
            "health_polls_before": sum(t < first for t, _ in health),
            "health_false_alarms_before": sum(t < first and c != 200 for t, c in health),
            "all": _phase_figures(rows), **{k: _phase_figures(v) for k, v in phases.items()}}


def pill_image() -> np.ndarray:
    from rollout.data.synthetic import normal_image

    return normal_image("syn_pill", 1, 96).image


def pill_request() -> dict:
    """One good ``/v1/synthesize`` body: a synthetic pill, one crack."""
    from benchmarks.bad_requests import b64, encode

    return {"image": b64(encode(pill_image())), "category": "syn_pill", "defect_type": "crack", "n": 1}


def serve_on_free_port(cfg, policy: str, **kwargs) -> str:
    """Deploy the endpoint (a copy of ``cfg`` on a free loopback port) on the current Ray
    session; returns its URL. The fault parts each start and shut down their own."""
    import socket

    from cluster.serve_app import start_serve

    cfg = copy.deepcopy(cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        cfg.serve.port = s.getsockname()[1]
    return start_serve(cfg, policy, **kwargs)


def serve_under_kill(cfg, policy: str, concurrency: int = 16, duration_s: float = 60.0) -> Dict[str, Any]:
    """Deploy the endpoint on the current Ray session, load it with kills, shut it down."""
    from ray import serve

    url = serve_on_free_port(cfg, policy)
    try:
        return asyncio.run(load_with_kills(url, pill_request(), concurrency, duration_s))
    finally:
        serve.shutdown()
