"""Episodes spread over two nodes of a simulated multi-node cluster."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rollout.store import TrajectoryStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_episodes_spread_over_two_nodes(syn_root, tiny_models, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "tests.multinode_rollout", str(syn_root), str(tiny_models["text"]),
                           str(tmp_path)], cwd=repo, env=env, capture_output=True, text=True, timeout=240)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    result = json.loads(line[0][len("RESULT "):])
    assert result["stored"] == 6
    assert len(set(result["worker_nodes"])) == 2  # SPREAD put one worker on each node
    assert set(result["by_node"]) == set(result["worker_nodes"]) <= set(result["cluster_nodes"])
    df = TrajectoryStore(tmp_path).read()
    assert len(df) == 6 and set(df.node_id) == set(result["worker_nodes"])
