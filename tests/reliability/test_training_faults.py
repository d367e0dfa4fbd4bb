"""Faults during training: the learner process is SIGKILLed mid-step, and mid-checkpoint-
write; ``anomalyagent train`` resumes from the last complete checkpoint and ends with every
step once — in the history, in TensorBoard and in the trajectory store."""
from collections import Counter

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.config import load_config
from cluster.train_cmd import run_train
from policy.checkpoint import CheckpointManager
from policy.faults import FAULT_ENV
from rollout.store import TrajectoryStore

pytestmark = [pytest.mark.reliability, pytest.mark.ray, pytest.mark.slow]
TINY = ["data.synthetic.size=48", "data.synthetic.n_train=2", "data.synthetic.n_test_per_defect=3",
        "tools.knowledge.embedder=hashing", "sft.variants_per_anomaly=1", "sft.steps=4", "sft.save_every=4",
        "sft.batch_size=4", "rl.steps=4", "rl.tasks_per_step=2", "rl.save_every=1", "rollout.group_size=2",
        "episode.max_turns=2", "episode.max_turn_tokens=32", "policy.tiny.num_layers=1",
        "learner.filter_zero_advantage=false"]  # every step reaches the learner, even with equal rewards


@pytest.mark.parametrize("fault", ["learner_step:3", "checkpoint_write:2"])
def test_train_resumes_after_the_learner_dies(ray_local, tmp_path, monkeypatch, capsys, fault):
    cfg = load_config(None, [f"cache_dir={tmp_path}/cache", *TINY])
    monkeypatch.setenv(FAULT_ENV, fault)
    res = run_train(cfg, tmp_path / "run")
    assert "a learner process died" in capsys.readouterr().out
    grpo = tmp_path / "run" / "grpo"
    assert [h["step"] for h in res["history"]] == [1, 2, 3, 4]
    assert CheckpointManager(grpo / "checkpoints").latest().name == "step_4"
    assert not list((grpo / "checkpoints").glob(".tmp-*"))  # the half-written folder was cleaned
    acc = EventAccumulator(str(grpo / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("rl/reward")] == [1, 2, 3, 4]
    ids = TrajectoryStore(grpo / "trajectories").ids()
    per_step = Counter(int(e[1:].split("-", 1)[0]) for e in ids)
    assert per_step == {0: 4, 1: 4, 2: 4, 3: 4}  # 2 tasks x G=2 per step, each step once


@pytest.mark.ray
def test_a_learner_group_without_room_waits_says_so_and_gives_up_whole(ray_local, capsys):
    """After a lost node the learner's ranks may not fit: it waits and says so, never runs short
    of ranks (all bundles or none), and past the timeout releases what it held."""
    from ray.util.placement_group import placement_group, placement_group_table

    from policy.config import LearnerConfig
    from policy.learner_group import learner_bundles, wait_for_placement

    cfg = LearnerConfig(world_size=2, num_cpus_per_worker=5.0, placement_strategy="STRICT_PACK")  # 10 of 8 CPUs
    pg = placement_group(learner_bundles(cfg), strategy=cfg.placement_strategy)
    with pytest.raises(TimeoutError, match=r"learner: no room for 2 learner ranks of \{'CPU': 5.0\} \(STRICT_PACK\)"):
        wait_for_placement(pg, cfg, timeout_s=1.0, say_every_s=0.3)
    assert "learner: waiting for room for 2 learner ranks" in capsys.readouterr().out
    assert placement_group_table(pg)["state"] == "REMOVED"
