"""Start the actors a run needs from the configuration: generation engines, tool pools,
the rollout manager. One place, so the CLI, the demo, the benchmarks and the tests start
them the same way."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import ray

from cluster.config import AppConfig


def start_engines(cfg: AppConfig, policy_path: str) -> List[Any]:
    from policy.engine import EngineActor

    e = cfg.policy.engine
    remote = ray.remote(EngineActor).options(num_cpus=e.num_cpus, num_gpus=e.num_gpus, max_restarts=e.max_restarts,
                                             max_task_retries=e.max_restarts, max_concurrency=1000,
                                             scheduling_strategy="SPREAD")
    return [remote.remote(policy_path, e.max_batch_size, e.batch_wait_ms, cfg.seed + i, e.prefix_cache_tokens, e.continuous_batching) for i in range(e.replicas)]


@dataclass
class Runtime:
    engines: List[Any]
    tools: Dict[str, Any]
    manager: Any

    def shutdown(self) -> None:
        self.manager.shutdown()
        for handle in self.engines + [a for pool in self.tools.values() for a in pool.actors]:
            ray.kill(handle, no_restart=True)


def start_runtime(cfg: AppConfig, policy_path: str, store_dir: Optional[Path] = None, on_episode=(),
                  engines: Optional[List[Any]] = None) -> Runtime:
    from actors.ray_actors import start_tools
    from cluster.resources import check_cluster
    from rollout.manager import RolloutManager
    from rollout.store import TrajectoryStore

    check_cluster(cfg)  # fail before anything starts
    engines = engines if engines is not None else start_engines(cfg, policy_path)
    tools = start_tools(cfg.tools)
    store = TrajectoryStore(store_dir) if store_dir is not None else None
    manager = RolloutManager(policy_path, engines, tools, cfg.episode, cfg.rollout, store, on_episode)
    return Runtime(engines, tools, manager)
