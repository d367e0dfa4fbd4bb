"""The GRPO learner on verl's core_algos: advantages, masking, updates, data parallelism."""
import copy

import numpy as np
import pytest
import torch

from policy.config import LearnerConfig
from policy.learner import PolicyLearner, add_advantages, batch_from_episodes, drop_zero_advantage_groups, response_log_probs
from tests.learner_batches import episodes, on_policy


def test_grpo_advantage_of_an_equal_reward_group_is_zero_and_dropped():
    b = add_advantages(batch_from_episodes(episodes(), [1.0, 1.0, 0.0, 1.0], pad_id=0))
    adv = b.batch["advantages"]
    assert torch.all(adv[:2] == 0)  # group g0: equal rewards, std 0
    assert adv[2].abs().sum() > 0 and adv[3].abs().sum() > 0
    kept = drop_zero_advantage_groups(b)
    assert list(kept.non_tensor_batch["episode_id"]) == ["e2", "e3"]


def test_reward_sits_on_the_last_policy_token():
    eps = episodes(1, 2)
    b = batch_from_episodes(eps, [0.5, 2.0], pad_id=0)
    for i, e in enumerate(eps):
        last = max(j for j, m in enumerate(e["response_mask"]) if m)
        assert b.batch["token_level_rewards"][i, last] == [0.5, 2.0][i]
        assert b.batch["token_level_rewards"][i].sum() == [0.5, 2.0][i]


def test_step_changes_every_parameter_and_ignores_observation_positions(tiny_models):
    cfg = LearnerConfig(lr=1e-2)
    a = PolicyLearner(str(tiny_models["text"]), cfg, group_size=2)
    b = PolicyLearner(str(tiny_models["text"]), cfg, group_size=2)
    before = a.state_dict()
    batch = on_policy(add_advantages(batch_from_episodes(episodes(), [1.0, 0.0, 0.5, 2.0], pad_id=0)), a)
    noisy = copy.deepcopy(batch)
    obs = noisy.batch["response_mask"] == 0
    noisy.batch["old_log_probs"][obs] = -9.0  # observation positions carry no policy signal
    noisy.batch["advantages"][obs] = 5.0
    ma = a.step(batch, int(batch.batch["response_mask"].sum()))
    mb = b.step(noisy, int(noisy.batch["response_mask"].sum()))
    assert ma["loss"] == pytest.approx(mb["loss"], abs=1e-7)
    after_a, after_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(after_a[k], after_b[k]) for k in after_a)
    trainable = {n for n, p in a.model.named_parameters() if p.requires_grad}
    assert [n for n in trainable if torch.equal(before[n], after_a[n])] == []
    assert all(torch.equal(v, a.ref.state_dict()[k]) for k, v in before.items())  # the reference stays frozen


@pytest.mark.ray
@pytest.mark.slow
def test_world_size_two_matches_world_size_one(ray_local, tiny_models):
    from policy.learner_group import LearnerGroup

    path = str(tiny_models["text"])
    # Adam's first step is ~lr*sign(g): entries of float-noise size would flip with summation
    # order, so compare with an eps that keeps the step proportional to the gradient there
    single = PolicyLearner(path, LearnerConfig(lr=1e-2, adam_eps=1e-3), group_size=2)
    batch = on_policy(add_advantages(batch_from_episodes(episodes(3, 2, seed=1), [1, 0, 0.5, 2, 0, 1], pad_id=0)), single)
    single.step(copy.deepcopy(batch), int(batch.batch["response_mask"].sum()))
    group = LearnerGroup(path, LearnerConfig(lr=1e-2, adam_eps=1e-3, world_size=2, num_cpus_per_worker=0.5), group_size=2)
    try:
        group.step(batch)
        rank0, rank1 = group.state_dicts()
    finally:
        group.shutdown()
    ref = single.state_dict()
    for k in ref:
        assert torch.equal(rank0[k], rank1[k]), k  # ranks stay identical
        assert torch.allclose(rank0[k], ref[k], atol=1e-6), k  # and equal the single-process step


def test_entropy_of_a_uniform_policy_is_log_vocab(tiny_models):
    learner = PolicyLearner(str(tiny_models["text"]), LearnerConfig(), group_size=2)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.zero_()  # all logits 0: the uniform distribution
    batch = batch_from_episodes(episodes(1, 2), [0.0, 1.0], pad_id=0)
    logp, ent = response_log_probs(learner.model, batch, with_entropy=True)
    vocab = learner.model.config.vocab_size
    mask = batch.batch["response_mask"] > 0
    assert torch.allclose(ent[mask], torch.full_like(ent[mask], float(np.log(vocab))), atol=1e-4)
    assert torch.allclose(logp[mask], torch.full_like(logp[mask], -float(np.log(vocab))), atol=1e-4)


def test_gae_matches_a_hand_computed_recursion_over_policy_tokens():
    """verl's GAE on our batch skips observation tokens: by hand on one sequence."""
    from policy.learner import gae_advantages

    eps = [{"episode_id": "e", "group": "g", "prompt_ids": [5, 6], "response_ids": [1, 2, 3, 4, 5],
            "response_mask": [1, 1, 0, 0, 1], "response_logprobs": [-0.1] * 5}]
    b = batch_from_episodes(eps, [1.0], pad_id=0)
    values = torch.tensor([[0.2, 0.4, 9.0, 9.0, 0.5]])
    gamma, lam = 0.9, 0.8
    # policy tokens t = 0, 1, 4; the reward 1.0 sits on t = 4
    d4 = 1.0 - 0.5
    d1 = 0.0 + gamma * 0.5 - 0.4
    d0 = 0.0 + gamma * 0.4 - 0.2
    a4, a1 = d4, d1 + gamma * lam * d4
    a0 = d0 + gamma * lam * a1
    raw = torch.tensor([a0, a1, a4])
    adv, ret = gae_advantages(b, values, gamma, lam)
    assert torch.allclose(ret[0, [0, 1, 4]], raw + torch.tensor([0.2, 0.4, 0.5]), atol=1e-6)
    whitened = (raw - raw.mean()) / torch.sqrt(raw.var(unbiased=True) + 1e-8)  # verl whitens over the mask
    assert torch.allclose(adv[0, [0, 1, 4]], whitened, atol=1e-5)
    assert torch.all(adv[0, [2, 3]] == 0) and torch.all(ret[0, [2, 3]] == 0)


def test_ppo_gae_step_changes_every_parameter_and_the_value_head(tiny_models):
    cfg = LearnerConfig(lr=1e-2, estimator="gae")
    a = PolicyLearner(str(tiny_models["text"]), cfg, group_size=2)
    before = a.state_dict()
    head_before = {k: v.clone() for k, v in a.value_head.state_dict().items()}
    batch = on_policy(batch_from_episodes(episodes(), [1.0, 0.0, 0.5, 2.0], pad_id=0), a)
    m1 = a.step(batch, int(batch.batch["response_mask"].sum()))
    assert m1["value_loss"] > 0
    after = a.state_dict()
    assert [n for n, p in a.model.named_parameters() if p.requires_grad and torch.equal(before[n], after[n])] == []
    assert all(not torch.equal(head_before[k], v) for k, v in a.value_head.state_dict().items())
    for _ in range(5):  # the critic fits the returns: its loss falls on a fixed batch
        m = a.step(batch, int(batch.batch["response_mask"].sum()))
    assert m["value_loss"] < m1["value_loss"]
