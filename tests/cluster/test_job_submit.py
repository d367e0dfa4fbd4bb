"""``ray job submit --working-dir . -- anomalyagent train ...`` against a local token-authenticated head."""
import re
from pathlib import Path

import pytest

from tests.local_head import LocalHead

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TINY = ["data.synthetic.size=48", "data.synthetic.n_train=2", "data.synthetic.n_test_per_defect=3",
        "tools.knowledge.embedder=hashing", "sft.variants_per_anomaly=1", "sft.steps=4", "sft.save_every=4",
        "sft.batch_size=4", "rl.steps=2", "rl.tasks_per_step=2", "rl.save_every=1", "rollout.group_size=2",
        "episode.max_turns=2", "episode.max_turn_tokens=32", "policy.tiny.num_layers=1"]


@pytest.fixture()
def head():
    h = LocalHead(num_cpus=8).start()
    yield h
    h.stop()
    assert not h.processes(), "the test cluster is stopped"


def test_train_through_ray_job_submit(head, tmp_path):
    with pytest.raises(Exception, match="(?i)auth"):  # the head really checks the token
        head.client(token="0" * 32).submit_job(entrypoint="true")

    entry = ["anomalyagent", "train", "--config", "configs/cpu.yaml", f"cache_dir={tmp_path}/cache",
             f"out_dir={tmp_path}/run", *TINY]
    r = head.ray("job", "submit", "--address", head.address, "--working-dir", str(REPO), "--", *entry, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in log, log[-3000:]
    assert re.search(r"reward_first5=-?\d+\.\d+ reward_last5=-?\d+\.\d+", log), log[-2000:]
    assert (tmp_path / "run" / "grpo" / "checkpoints" / "latest").exists() or any(
        (tmp_path / "run" / "grpo" / "checkpoints").glob("step_*"))
