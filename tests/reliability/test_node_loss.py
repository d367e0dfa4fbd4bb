"""A worker node dies mid-rollout (3-node ``ray.cluster_utils.Cluster``): its actors come back
on the two nodes that are left, and every one of the 64 episodes is stored exactly once.
The cluster is private, so it runs in its own process (the suite's Ray session stays up)."""
import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.ray, pytest.mark.slow]


def test_a_lost_node_loses_and_duplicates_nothing(syn_root, tiny_models):
    cmd = [sys.executable, "-m", "cluster.fault_node", "--fault-only", "-", str(tiny_models["text"]), str(syn_root),
           "tools.knowledge.embedder=hashing", "data.target_categories=[syn_pill,syn_marble]"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"node loss: {figures}")
    lost = figures["node_lost"]  # (the bench also runs it without the fault, for the time; not needed here)
    assert "baseline" not in figures and lost["episodes"] == 64
    assert (lost["stored"], lost["lost"], lost["duplicates"]) == (64, 0, 0)
    assert lost["removed_held"]["RolloutWorker"] >= 1  # the node held a worker (and what else it held)
    assert lost["retried"] >= 1 and sum(lost["retry_reasons"].values()) == lost["retried"]
    assert lost["nodes_lost_named"] == [True]  # the manager named the node that left
    assert lost["workers_replaced"] >= 1 and lost["workers_on_removed_node_after"] == 0
    assert lost["nodes_alive_after"] == 2
