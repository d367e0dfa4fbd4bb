"""Run by tests/cluster/test_multinode.py in its own process: a two-node Ray cluster simulated on
this machine (ray.cluster_utils.Cluster), a scripted rollout, the episodes' node ids."""
import json
import sys

import ray
from ray.cluster_utils import Cluster

from cluster.config import load_config
from cluster.runtime import start_runtime
from rollout.data import MVTecAD
from rollout.tasks import make_tasks
from tests.fake_engine import ScriptedEngine
from tests.scripted import WELL_FORMED


def main(syn_root: str, policy: str, store: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    cluster.add_node(num_cpus=4)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        cfg = load_config(None, ["tools.knowledge.embedder=hashing", "episode.max_turns=10", "rollout.num_workers=2",
                                 "rollout.episodes_per_worker=4", "rollout.group_size=2"])
        engine = ray.remote(ScriptedEngine).options(num_cpus=0.1, max_concurrency=100).remote(policy, WELL_FORMED)
        tasks = make_tasks(MVTecAD(syn_root), ["syn_pill"], seed=3)
        rt = start_runtime(cfg, policy, store, engines=[engine])
        report = rt.manager.run(rt.manager.specs(tasks), progress=False)
        worker_nodes = [s["node_id"] for s in rt.manager.worker_stats()]
        rt.shutdown()
        print("RESULT " + json.dumps({"by_node": report.by_node, "stored": report.stored, "worker_nodes": worker_nodes,
                                      "cluster_nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]]}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
