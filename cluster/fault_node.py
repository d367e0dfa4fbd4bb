"""A node that dies mid-rollout, on a 3-node ``ray.cluster_utils.Cluster`` on this machine.

The same rollout runs twice on the same cluster: once as it is, once while the worker node
that holds the most of our actors (a rollout worker, an engine, tool replicas) is removed
after ``kill_after`` stored episodes, its processes killed without a graceful stop. Ray
restarts the lost actors on the nodes that are left (every actor has ``max_restarts`` and
``SPREAD`` placement); the manager re-runs the episodes that were in flight there and names
the lost node. We count what was stored, lost, stored twice and re-run, and the time against
the run without the fault.

The cluster is ours alone, so this needs a process with no Ray session open: the test runs it
as ``python -m cluster.fault_node --fault-only`` (the fault run only), ``anomalyagent bench
faults`` calls it before opening its own session.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

from cluster.config import AppConfig

NODE_CPUS = 4  # logical CPUs per node: enough that the actors of a lost node fit on the two left


def _cluster_cfg(cfg: AppConfig) -> AppConfig:
    """One rollout worker and one engine per node, image_gen replicated on each, small episodes,
    tool actors at 0.05 logical CPU (the logical CPUs are 3 x NODE_CPUS, the real ones 2)."""
    cfg = copy.deepcopy(cfg)
    for section in ("prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen"):
        getattr(cfg.tools, section).resources.num_cpus = 0.05
    cfg.episode.max_turns, cfg.episode.max_turn_tokens = 4, 48
    cfg.rollout.group_size, cfg.rollout.num_workers, cfg.rollout.episodes_per_worker = 2, 3, 4
    cfg.policy.engine.replicas, cfg.policy.engine.num_cpus = 3, 1.0  # a node has room for a second engine
    cfg.tools.image_gen.resources.replicas = 3
    return cfg


class NodeRemover:
    """The manager's ``on_episode`` callback: after ``after`` stored episodes it removes the
    worker node that hosts the most of our actors (never the head, where the driver is)."""

    def __init__(self, cluster, after: Optional[int]):
        self.cluster, self.after, self.done = cluster, after, 0
        self.delivered: List[str] = []
        self.removed: Optional[Dict[str, Any]] = None

    def __call__(self, record, extra) -> None:
        self.done += 1
        self.delivered.append(record["episode_id"])
        if self.after is not None and self.done == self.after and self.removed is None:
            self.removed = self.remove_busiest_worker_node()

    def remove_busiest_worker_node(self) -> Dict[str, Any]:
        from cluster.ray_session import live_actors

        alive = live_actors()
        held = {n.node_id: Counter(cls for cls, node, _ in alive if node == n.node_id) for n in self.cluster.worker_nodes}
        node = max(self.cluster.worker_nodes, key=lambda n: (held[n.node_id]["RolloutWorker"], sum(held[n.node_id].values())))
        self.cluster.remove_node(node, allow_graceful=False)
        return {"node_id": node.node_id, "held": dict(held[node.node_id])}


def node_loss_rollout(cfg: AppConfig, policy: str, root: str, n_tasks: int = 32, kill_after: int = 12,
                      baseline: bool = True) -> Dict[str, Any]:
    """``n_tasks`` x G=2 episodes on 3 nodes, without (unless ``baseline`` is false: the test
    checks what is stored, the bench also times it) and then with a worker node removed."""
    import ray
    from ray.cluster_utils import Cluster

    from cluster.runtime import start_runtime
    from rollout.data import open_dataset
    from rollout.store import TrajectoryStore
    from rollout.tasks import make_tasks

    cfg = _cluster_cfg(cfg)
    ds = open_dataset(cfg.data.format, root, cfg.data.target_categories)
    tasks = make_tasks(ds, ds.categories, per_defect=6, seed=cfg.seed + 13)[:n_tasks]
    if len(tasks) < n_tasks:
        raise ValueError(f"the dataset gives {len(tasks)} tasks; {n_tasks} asked")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": NODE_CPUS, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})  # notice in ~3 s
    for _ in range(2):
        cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="anomalyagent-node-loss", log_to_driver=False)
    figures: Dict[str, Any] = {"nodes": 3}
    try:
        for mode, after in ((("baseline", None),) if baseline else ()) + (("node_lost", kill_after),):
            store_dir = Path(tempfile.mkdtemp(prefix=f"node-loss-{mode}-"))
            remover = NodeRemover(cluster, after)
            rt = start_runtime(cfg, policy, store_dir, on_episode=[remover])
            try:
                specs = rt.manager.specs(tasks)
                report = rt.manager.run(specs, progress=False, keep_records=False)
                placed = Counter(st["node_id"] for st in rt.manager.worker_stats())
            finally:
                rt.shutdown()
            ids = TrajectoryStore(store_dir).ids()
            expected = {s.episode_id for s in specs}
            removed = remover.removed
            figures[mode] = {
                "episodes": len(specs), "stored": len(ids), "lost": len(expected - set(ids)),
                "duplicates": len(remover.delivered) - len(set(remover.delivered)), "retried": report.retried,
                "retry_reasons": report.retry_reasons, "wall_s": round(report.wall_s, 1),
                "removed_held": removed["held"] if removed else None,
                "nodes_lost_named": [n == (removed or {}).get("node_id") for n in report.nodes_lost],
                "workers_replaced": len(report.replaced),
                "workers_on_removed_node_after": placed.get((removed or {}).get("node_id"), 0),
                "nodes_alive_after": sum(n["Alive"] for n in ray.nodes()),
            }
    finally:
        ray.shutdown()
        cluster.shutdown()
    if baseline:
        figures["slowdown"] = round(figures["node_lost"]["wall_s"] / max(figures["baseline"]["wall_s"], 1e-9), 2)
    return figures


def main(argv: List[str]) -> int:
    """``python -m cluster.fault_node [--fault-only] CONFIG|- POLICY ROOT [dotlist...]``: the
    figures as one JSON line (``-``: the built-in defaults)."""
    from cluster.config import load_config

    fault_only = argv[:1] == ["--fault-only"]
    config, policy, root, *overrides = argv[1:] if fault_only else argv
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster on this machine
    cfg = load_config(None if config == "-" else config, overrides)
    print(json.dumps(node_loss_rollout(cfg, policy, root, baseline=not fault_only)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
