"""The rollout manager: tasks × G samples spread over rollout workers on any Ray cluster.

Each ``RolloutWorker`` actor runs many episodes at once (asyncio), each through the
registered verl agent loop, calling the generation engines and the tool actors. Finished
trajectories stream back as they complete: the manager stores each exactly once and hands
it to the ``on_episode`` callbacks (the reward actor). An episode whose worker died, or
that met a tool which stayed unavailable, is run again (same episode id) — nothing is lost
and the store's id check means nothing is stored twice. When a node leaves the cluster, Ray
restarts its actors on the nodes left (``max_restarts``); the manager keeps a restarting
worker out of rotation until it answers again, and names the lost node in its report.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import ray

from rollout.config import EpisodeConfig, RolloutConfig
from rollout.store import TrajectoryStore
from rollout.tasks import Task


REPING_S = 1.0  # how soon to ask again after a worker that is being restarted


@dataclass
class EpisodeSpec:
    episode_id: str
    task: Task
    group: str
    attempt: int = 1


class EngineRouter:
    """Sticky routing of an episode's turns to one of several engine actors."""

    def __init__(self, engines: Sequence[Any]):
        self.engines = list(engines)

    async def generate(self, request_id: str, prompt_ids, sampling_params, image_data=None, **kwargs):
        episode = request_id.rsplit("-t", 1)[0]  # an episode stays on one engine: its prefix cache is there
        engine = self.engines[hash(episode) % len(self.engines)]
        return await engine.generate.remote(request_id=request_id, prompt_ids=prompt_ids,
                                            sampling_params=sampling_params, image_data=image_data)


class RolloutWorker:
    def __init__(self, policy_path: str, engines: Sequence[Any], tools: Dict[str, Any], episode_cfg: EpisodeConfig):
        from transformers import AutoTokenizer

        from rollout.verl_adapter import AnomalyAgentLoop, minimal_trainer_config

        from rollout.vision import processor_for

        tok = AutoTokenizer.from_pretrained(policy_path)
        self.loop = AnomalyAgentLoop(minimal_trainer_config(response_length=episode_cfg.max_response_tokens),
                                     EngineRouter(engines), tok, processor=processor_for(policy_path), tools=tools,
                                     episode_config=episode_cfg)
        ctx = ray.get_runtime_context()
        self.node_id, self.worker_id = ctx.get_node_id(), ctx.get_actor_id()
        self.busy_s = 0.0

    async def run_episode(self, spec: EpisodeSpec) -> Dict[str, Any]:
        t0 = time.perf_counter()
        out = await self.loop.run({}, task=spec.task, episode_id=spec.episode_id)
        self.busy_s += time.perf_counter() - t0
        return {"record": out.extra_fields["episode"], "node_id": self.node_id, "worker": self.worker_id}

    def pid(self) -> int:
        import os

        return os.getpid()

    def stats(self) -> Dict[str, Any]:
        return {"busy_s": self.busy_s, "node_id": self.node_id}


@dataclass
class RolloutReport:
    episodes: int = 0
    stored: int = 0
    retried: int = 0
    lost: int = 0
    wall_s: float = 0.0
    by_node: Dict[str, int] = field(default_factory=dict)
    retry_reasons: Dict[str, int] = field(default_factory=dict)
    records: List[Dict[str, Any]] = field(default_factory=list)
    nodes_lost: List[str] = field(default_factory=list)  # nodes that left the cluster during the run
    replaced: List[Dict[str, Any]] = field(default_factory=list)  # workers Ray re-placed: worker, from, to


def _infrastructure_fault(record: Dict[str, Any]) -> bool:
    return any(not e["ok"] and e.get("error", {}).get("code") == "unavailable" for e in record["tool_log"])


class RolloutManager:
    def __init__(self, policy_path: str, engines: Sequence[Any], tools: Dict[str, Any], episode_cfg: EpisodeConfig,
                 rollout_cfg: RolloutConfig, store: Optional[TrajectoryStore] = None,
                 on_episode: Sequence[Callable[[Dict[str, Any], Dict[str, Any]], None]] = ()):
        self.cfg = rollout_cfg
        self.store, self.on_episode = store, list(on_episode)
        remote = ray.remote(RolloutWorker).options(
            num_cpus=rollout_cfg.worker_num_cpus, max_restarts=rollout_cfg.max_attempts, max_task_retries=0,
            max_concurrency=rollout_cfg.episodes_per_worker, scheduling_strategy="SPREAD")
        self.workers = [remote.remote(policy_path, list(engines), tools, episode_cfg)
                        for _ in range(rollout_cfg.num_workers)]

    def specs(self, tasks: Sequence[Task], group_size: Optional[int] = None, prefix: str = "") -> List[EpisodeSpec]:
        g = group_size or self.cfg.group_size
        return [EpisodeSpec(f"{prefix}{t.task_id}-g{k}", t, f"{prefix}{t.task_id}") for t in tasks for k in range(g)]

    def run(self, specs: Sequence[EpisodeSpec], progress: bool = True, keep_records: bool = True) -> RolloutReport:
        from tqdm import tqdm

        report = RolloutReport(episodes=len(specs))
        t0 = time.perf_counter()
        queue = [s for s in specs if not (self.store and self.store.has(s.episode_id))]
        report.stored = len(specs) - len(queue)  # already stored by an earlier, interrupted run
        in_flight: Dict[Any, tuple] = {}
        load = self.load = [0] * len(self.workers)  # episodes in flight per worker
        down: Dict[int, Any] = {}  # worker index -> ping sent after a failure; out of rotation until it answers
        reping: Dict[int, float] = {}  # worker index -> when to ping again (it was still restarting)
        try:  # worker index -> the node it last answered from
            node_of: Dict[int, str] = {w: st["node_id"] for w, st in enumerate(self.worker_stats())}
        except ray.exceptions.RayActorError:
            node_of = {}
        dead: set = set()  # workers that will not come back
        alive_at_start = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        rr = itertools.cycle(range(len(self.workers)))
        bar = tqdm(total=len(specs), initial=report.stored, desc="rollout", unit="ep", disable=not progress)
        done_ids = set()

        def free_worker() -> Optional[int]:
            for _ in range(len(self.workers)):
                w = next(rr)
                if w not in down and w not in dead and load[w] < self.cfg.episodes_per_worker:
                    return w
            return None

        while queue or in_flight:
            if len(dead) == len(self.workers):
                raise RuntimeError("every rollout worker is dead; episodes left: %d" % (len(queue) + len(in_flight)))
            while queue and (w := free_worker()) is not None:
                spec = queue.pop(0)
                in_flight[self.workers[w].run_episode.remote(spec)] = (spec, w)
                load[w] += 1
            now = time.monotonic()
            for w in [w for w, at in reping.items() if at <= now]:
                del reping[w]
                down[w] = self.workers[w].stats.remote()
            pings = {ref: w for w, ref in down.items() if ref is not None}
            if not in_flight and not pings:  # every worker is restarting: ask again when the first is due
                time.sleep(max(0.0, min(reping.values()) - now))
                continue
            wait_s = min([5.0] + [max(0.05, at - now) for at in reping.values()])
            ready, _ = ray.wait(list(in_flight) + list(pings), num_returns=1, timeout=wait_s)
            for ref in ready:
                if ref in pings:
                    w = pings[ref]
                    del down[w]
                    try:
                        node = ray.get(ref)["node_id"]
                    except ray.exceptions.ActorUnavailableError:  # Ray is still restarting it (a lost node)
                        down[w], reping[w] = None, time.monotonic() + REPING_S
                        continue
                    except ray.exceptions.RayActorError:
                        dead.add(w)  # out of restarts
                        continue
                    if node_of.get(w) not in (None, node):  # Ray re-placed it: say where, and name the lost node
                        report.replaced.append({"worker": w, "from": node_of[w], "to": node})
                        self._note_lost_nodes(report, alive_at_start)
                    node_of[w] = node
                    continue
                spec, w = in_flight.pop(ref)
                load[w] -= 1
                try:
                    out = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError) as e:
                    if isinstance(e, ray.exceptions.RayTaskError):  # raised inside a live worker: a callee was lost
                        self._retry(spec, queue, report, f"an engine or tool actor was lost: {type(e).__name__}")
                        continue
                    if w not in down and w not in dead:
                        down[w] = self.workers[w].stats.remote()  # answers once Ray has restarted it
                    self._retry(spec, queue, report, f"worker died: {type(e).__name__}")
                    continue
                record = out["record"]
                node_of[w] = out["node_id"]
                if _infrastructure_fault(record):
                    self._retry(spec, queue, report, "a tool stayed unavailable")
                    continue
                if spec.episode_id in done_ids:
                    continue
                done_ids.add(spec.episode_id)
                extra = {"group": spec.group, "node_id": out["node_id"], "worker": out["worker"], "attempt": spec.attempt}
                if self.store is None or self.store.write(record, extra):
                    report.stored += 1
                    report.by_node[out["node_id"]] = report.by_node.get(out["node_id"], 0) + 1
                    for cb in self.on_episode:
                        cb(record, extra)
                    if keep_records:
                        report.records.append({**record, **extra})
                bar.update(1)
        bar.close()
        self._note_lost_nodes(report, alive_at_start)  # also those whose workers' episodes failed elsewhere
        report.wall_s = time.perf_counter() - t0
        return report

    @staticmethod
    def _note_lost_nodes(report: RolloutReport, alive_at_start: set) -> None:
        for node in sorted(alive_at_start - {n["NodeID"] for n in ray.nodes() if n["Alive"]}):
            if node not in report.nodes_lost:
                report.nodes_lost.append(node)
                print(f"rollout: node {node[:8]} left the cluster; its episodes run again on the nodes that are left",
                      flush=True)

    def _retry(self, spec: EpisodeSpec, queue: list, report: RolloutReport, why: str) -> None:
        report.retry_reasons[why] = report.retry_reasons.get(why, 0) + 1
        if spec.attempt >= self.cfg.max_attempts:
            report.lost += 1
            return
        report.retried += 1
        queue.append(EpisodeSpec(spec.episode_id, spec.task, spec.group, spec.attempt + 1))

    def worker_stats(self) -> List[Dict[str, Any]]:
        return ray.get([w.stats.remote() for w in self.workers])

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
