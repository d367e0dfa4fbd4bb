"""``anomalyagent bench faults``: reliability figures, measured in one run.

1. rollout: a 32-episode rollout of the tiny policy on a local Ray cluster, during which a
   tool actor, a rollout worker and the generation engine are each SIGKILLed; compared with
   the same rollout without faults (episodes retried, extra wall time, lost, duplicates);
2. parser: N generated policy turns through the parser and the tool-argument checks;
3. tools: a tool that raises, hangs or returns garbage, behind the real ``ToolService``;
4. serve: the bad-request corpus against the endpoint (all must be 4xx, the server
   healthy after), then a sustained concurrent load for a fixed time (5xx count, p50/p99).

5. cluster scale (issue 22): a worker node of a 3-node cluster removed mid-rollout
   (cluster/fault_node.py), torn and corrupt files against their readers
   (cluster/fault_files.py), the endpoint's auth (cluster/fault_auth.py), and 16 clients
   while a tool replica and the policy engine are killed (cluster/fault_serve.py).

Last two lines: ``episodes_lost=<n> duplicates=<n> parser_crashes=<n> serve_5xx=<n>``, then
``node_lost_episodes=<n> serve_5xx_under_kill=<n> corrupt_files_undetected=<n> unauthorized_accepted=<n>``.
"""
from __future__ import annotations

import asyncio
import copy
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from actors.image_gen import ProceduralImageGen
from cluster.config import AppConfig


def _small(cfg: AppConfig) -> AppConfig:
    cfg = copy.deepcopy(cfg)
    cfg.episode.max_turns, cfg.episode.max_turn_tokens = 4, 48
    cfg.rollout.group_size = 2
    return cfg


class Killer:
    """The manager's ``on_episode`` callback that SIGKILLs, as episodes finish, a tool actor
    (after 3), a busy rollout worker (after 8) and the generation engine (after 14)."""

    def __init__(self, enabled: bool):
        self.enabled, self.done, self.killed, self.rt = enabled, 0, [], None
        self.delivered: List[str] = []  # episode ids handed to the callbacks (the reward stream)

    def __call__(self, record, extra) -> None:
        import ray

        self.done += 1
        self.delivered.append(record["episode_id"])
        if not self.enabled:
            return
        rt = self.rt
        if self.done == 3:
            victim, what = rt.tools["image_gen"].actors[0], "tool"
        elif self.done == 8:
            busy = [w for w, n in enumerate(rt.manager.load) if n > 0] or [0]
            victim, what = rt.manager.workers[busy[0]], "worker"
        elif self.done == 14:
            victim, what = rt.engines[0], "engine"
        else:
            return
        os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)
        self.killed.append(what)


def rollout_faults(cfg: AppConfig, policy: str, root: str, n_tasks: int = 16) -> Dict[str, Any]:
    """``n_tasks`` x G=2 episodes, once without and once with the three kills."""
    from cluster.runtime import start_runtime
    from rollout.data import open_dataset
    from rollout.store import TrajectoryStore
    from rollout.tasks import make_tasks

    cfg = _small(cfg)
    ds = open_dataset(cfg.data.format, root, cfg.data.target_categories)
    tasks = make_tasks(ds, ds.categories, per_defect=3, seed=cfg.seed + 11)[:n_tasks]
    figures: Dict[str, Any] = {}
    for mode in ("baseline", "faults"):
        store_dir = Path(tempfile.mkdtemp(prefix=f"faults-{mode}-"))
        killer = Killer(enabled=mode == "faults")
        rt = killer.rt = start_runtime(cfg, policy, store_dir, on_episode=[killer])
        try:
            specs = rt.manager.specs(tasks)
            report = rt.manager.run(specs, progress=True, keep_records=False)
        finally:
            rt.shutdown()
        killed = killer.killed
        ids = TrajectoryStore(store_dir).ids()
        expected = sorted(s.episode_id for s in specs)
        figures[mode] = {"episodes": len(specs), "stored": len(ids), "lost": len(set(expected) - set(ids)),
                         "duplicates": len(killer.delivered) - len(set(killer.delivered)), "retried": report.retried,
                         "retry_reasons": report.retry_reasons, "wall_s": round(report.wall_s, 1), "killed": killed}
    figures["extra_wall_s"] = round(figures["faults"]["wall_s"] - figures["baseline"]["wall_s"], 1)
    return figures


class RaisingTool(ProceduralImageGen):
    def run_one(self, req):
        raise RuntimeError("CUDA error: device-side assert triggered (simulated)")


class HangingTool(ProceduralImageGen):
    """Stuck far past any timeout until ``release`` is set (so its worker thread can end)."""

    def __init__(self, release: threading.Event):
        self.release = release

    def run_one(self, req):
        self.release.wait(30)
        return {}


class GarbageTool(ProceduralImageGen):
    """Returns ``payload`` instead of a result."""

    def __init__(self, payload: Any):
        self.payload = payload

    def run_one(self, req):
        return self.payload


def tool_faults(timeout_s: float = 0.5) -> Dict[str, Any]:
    """Each faulty tool behind ``ToolService``: the call must come back as a typed error in time."""
    from actors.service import ToolService

    release = threading.Event()
    image = np.zeros((32, 32, 3), np.uint8)
    out: Dict[str, Any] = {"escaped": 0}
    for name, tool in (("raises", RaisingTool()), ("hangs", HangingTool(release)),
                       ("garbage", GarbageTool({"image": "not an array"}))):
        svc = ToolService(tool, timeout_s=timeout_s)
        t0 = time.perf_counter()
        try:
            res = asyncio.run(svc.call({"prompt": "a crack"}, {"image": image}, {}))
            out[name] = {"code": res["error"]["code"] if not res["ok"] else "ok",
                         "seconds": round(time.perf_counter() - t0, 2), "failure_rate": sum(svc.errors.values()) / svc.calls}
        except Exception as e:  # noqa: BLE001 - counted
            out["escaped"] += 1
            out[name] = {"code": f"escaped: {type(e).__name__}"}
    release.set()
    return out


async def _load(url: str, body: dict, concurrency: int, duration_s: float) -> List[tuple]:
    import httpx

    results: List[tuple] = []
    deadline = time.monotonic() + duration_s
    async with httpx.AsyncClient(timeout=300) as client:
        async def user():
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/synthesize", json=body)
                results.append((r.status_code, time.perf_counter() - t0))
        await asyncio.gather(*(user() for _ in range(concurrency)))
    return results


def serve_faults(cfg: AppConfig, policy: str, duration_s: float, concurrency: int) -> Dict[str, Any]:
    import httpx
    from ray import serve

    from benchmarks.bad_requests import corpus
    from cluster.fault_serve import pill_image, pill_request, serve_on_free_port

    image = pill_image()
    url = serve_on_free_port(_small(cfg), policy)
    try:
        wrong = []
        with httpx.Client(timeout=60) as client:
            for name, kwargs, status, _ in corpus(image):
                code = client.post(url + "/v1/synthesize", **kwargs).status_code
                if not 400 <= code < 500:
                    wrong.append((name, code))
            healthy = client.get(url + "/healthz").status_code == 200
        results = asyncio.run(_load(url, pill_request(), concurrency, duration_s))
    finally:
        serve.shutdown()
    codes = [c for c, _ in results]
    lat = np.array([t for c, t in results if c == 200] or [float("nan")])
    return {"bad_requests": len(corpus(image)), "bad_not_4xx": wrong, "healthy_after": healthy,
            "load_requests": len(results), "load_5xx": sum(c >= 500 for c in codes),
            "load_codes": {str(c): codes.count(c) for c in sorted(set(codes))}, "duration_s": duration_s,
            "concurrency": concurrency, "p50_s": round(float(np.percentile(lat, 50)), 3),
            "p99_s": round(float(np.percentile(lat, 99)), 3)}


def run_faults_bench(cfg: AppConfig, fuzz_turns: int = 10000, serve_seconds: float = 20.0,
                     concurrency: int = 8, kill_seconds: float = 60.0, kill_clients: int = 16) -> Dict[str, Any]:
    import ray

    from cluster.assets import dataset_root, policy_path
    from cluster.fault_auth import auth_check
    from cluster.fault_files import corrupt_files_check
    from cluster.fault_node import node_loss_rollout
    from cluster.fault_serve import serve_under_kill
    from cluster.ray_session import cluster_session
    from rollout.fuzz import fuzz

    root, policy = str(dataset_root(cfg)), policy_path(cfg)
    files = corrupt_files_check(policy)
    print(f"files: {files}")
    if ray.is_initialized():
        raise RuntimeError("bench faults starts its own 3-node cluster: run it with no Ray session open")
    node = node_loss_rollout(cfg, policy, root)
    print(f"node loss: {node}")
    t0 = time.perf_counter()
    parser = fuzz(fuzz_turns, seed=cfg.seed)
    print(f"parser: {fuzz_turns} generated turns in {time.perf_counter() - t0:.1f}s, outcomes {parser}")
    tools = tool_faults()
    print(f"tools: {tools}")
    with cluster_session(cfg):
        rollout = rollout_faults(cfg, policy, root)
        print(f"rollout: {rollout}")
        srv = serve_faults(cfg, policy, serve_seconds, concurrency)
        print(f"serve: {srv}")
        auth = auth_check(cfg, policy)
        print(f"auth: {auth}")
        kill = serve_under_kill(_small(cfg), policy, kill_clients, kill_seconds)
        print(f"serve under kill: {kill}")
    f, n = rollout["faults"], node["node_lost"]
    return {"parser": parser, "tools": tools, "rollout": rollout, "serve": srv, "node": node, "files": files,
            "auth": auth, "serve_kill": kill,
            "episodes_lost": f["lost"], "duplicates": f["duplicates"],
            "parser_crashes": parser["crashes"] + tools["escaped"],
            "serve_5xx": srv["load_5xx"] + sum(1 for _, c in srv["bad_not_4xx"] if c >= 500),
            "node_lost_episodes": n["lost"] + n["duplicates"],
            "serve_5xx_under_kill": kill["all"]["5xx"] + kill["all"]["503_without_retry_after"],
            "corrupt_files_undetected": sum(not v for v in files.values()),
            "unauthorized_accepted": auth["unauthorized_accepted"]}
