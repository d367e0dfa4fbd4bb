"""The learner sharded with FSDP2 over two gloo ranks: the same step as one process,
a quarter-size shard per rank, and checkpoints that gather, write and re-shard."""
import copy

import pytest
import torch

from policy.checkpoint import CheckpointManager
from policy.config import LearnerConfig
from policy.learner import PolicyLearner, add_advantages, batch_from_episodes
from tests.learner_batches import episodes, on_policy

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _cfg(**kw):
    # adam_eps as in the replicated test: entries of float-noise size must not flip sign
    return LearnerConfig(lr=1e-2, adam_eps=1e-3, num_cpus_per_worker=0.5, **kw)


def test_fsdp_world_size_two_matches_world_size_one_including_an_empty_shard(ray_local, tiny_models):
    from policy.learner_group import LearnerGroup

    path = str(tiny_models["text"])
    single = PolicyLearner(path, _cfg(), group_size=2)
    batch = on_policy(add_advantages(batch_from_episodes(episodes(3, 2, seed=1), [1, 0, 0.5, 2, 0, 1], pad_id=0)), single)
    lone = batch.select_idxs([0])  # second step: rank 1's shard is empty and runs the placeholder
    m_single = single.step(copy.deepcopy(batch), int(batch.batch["response_mask"].sum()))
    single.step(copy.deepcopy(lone), int(lone.batch["response_mask"].sum()))
    group = LearnerGroup(path, _cfg(world_size=2, sharding="fsdp"), group_size=2)
    try:
        m_group = group.step(batch)
        group.step(lone)
        full = group.state_dict()
        counts = group.parameter_counts()
    finally:
        group.shutdown()
    ref = single.state_dict()
    assert set(full) == set(ref)
    for k in ref:
        assert torch.allclose(full[k], ref[k], atol=1e-6), k
    # the norm is a float32 sum of squares reduced per shard, then across ranks: its order differs
    assert m_group["grad_norm"] == pytest.approx(m_single["grad_norm"], rel=1e-4)
    for c in counts:  # each rank holds about half of every parameter
        assert c["full"] == counts[0]["full"] and 0.45 * c["full"] <= c["local"] <= 0.55 * c["full"]


def test_fsdp_checkpoint_gathers_on_save_and_reshards_on_load(ray_local, tiny_models, tmp_path):
    from policy.learner_group import LearnerGroup

    path = str(tiny_models["text"])
    batch = batch_from_episodes(episodes(2, 2, seed=2), [1.0, 0.0, 0.5, 2.0], pad_id=0)
    with torch.no_grad():
        batch.batch["old_log_probs"] = -torch.rand(batch.batch["responses"].shape)
    group = LearnerGroup(path, _cfg(world_size=2, sharding="fsdp", estimator="gae"), group_size=2)
    try:
        group.step(copy.deepcopy(batch))
        saved_weights = group.state_dict()
        ckpt = group.save_checkpoint(str(tmp_path), 1, 2, {"history": [0.5]})
        group.step(copy.deepcopy(batch))
        assert any(not torch.equal(v, saved_weights[k]) for k, v in group.state_dict().items())
        state = group.load_checkpoint(ckpt)
        restored = group.state_dict()
        m_after_load = group.step(copy.deepcopy(batch))
    finally:
        group.shutdown()
    assert state["step"] == 1 and state["history"] == [0.5]
    assert all(torch.equal(restored[k], v) for k, v in saved_weights.items())
    on_disk, blob = CheckpointManager.read(ckpt)  # a plain HF folder, loadable by the engines
    assert all(torch.equal(on_disk[k], v) for k, v in saved_weights.items())
    assert {"policy.model.embed_tokens.weight", "critic.proj.weight"} <= set(blob["optimizer"]["state"])  # by name, full
    assert blob["optimizer"]["state"]["critic.proj.weight"]["exp_avg"].shape == (1, 96)
    assert blob["state"]["value_head"]["proj.weight"].shape == (1, 96)
    assert m_after_load["value_loss"] >= 0

    replicated = LearnerGroup(path, _cfg(world_size=2, estimator="gae"), group_size=2)
    try:
        with pytest.raises(Exception, match="sharding=replicated"):
            replicated.load_checkpoint(ckpt)
    finally:
        replicated.shutdown()
