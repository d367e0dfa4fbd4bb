"""The RL loop end to end on a local Ray cluster with the tiny policy: rollout manager →
reward actor → learner → engines, checkpoint and resume."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from cluster.config import load_config
from cluster.rl_loop import train_rl
from rollout.store import TrajectoryStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def small(tmp_path, steps):
    cfg = load_config(None, [f"rl.steps={steps}", "rl.tasks_per_step=2", "rl.save_every=1", "rollout.group_size=2",
                             "rollout.num_workers=1", "episode.max_turns=10", "episode.max_turn_tokens=200",
                             "tools.knowledge.embedder=hashing", "learner.lr=1e-3", "policy.engine.num_cpus=0.5",
                             "learner.num_cpus_per_worker=0.5"])
    for section in ("prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen"):
        getattr(cfg.tools, section).resources.num_cpus = 0.05
    return cfg


def contrast_engine(path):
    import ray

    from tests.fake_engine import GroupContrastEngine
    from tests.scripted import WELL_FORMED

    return [ray.remote(GroupContrastEngine).options(num_cpus=0.1, max_concurrency=100).remote(path, WELL_FORMED)]


def fsdp(cfg):
    cfg.learner.world_size, cfg.learner.sharding = 2, "fsdp"
    return cfg


def test_two_steps_then_resume_for_a_third(ray_local, syn_root, tiny_models, tmp_path):
    """With the learner FSDP-sharded over two gloo ranks: weights reach the engines and the
    checkpoint gathered from the shards resumes."""
    out = tmp_path / "grpo"
    path = str(tiny_models["text"])
    res = train_rl(fsdp(small(tmp_path, 2)), path, str(syn_root), out, progress=False, engines=contrast_engine(path))
    assert [h["step"] for h in res["history"]] == [1, 2]
    for h in res["history"]:
        assert h["kept_episodes"] == 4  # every group has one good and one bad episode
        assert {"reward", "task", "reflection", "behaviour", "kl", "clipfrac", "episode_turns", "tool_error_rate",
                "time_generate_tools", "time_reward", "time_update"} <= set(h)
    assert (out / "reward_curve.png").stat().st_size > 1000
    assert any((out / "tensorboard").iterdir())
    assert (out / "checkpoints" / "latest").read_text() == "step_2"
    trained = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step_2" / "model").state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_models["text"]).state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    stored = len(list((out / "trajectories" / "episodes").glob("*.parquet")))
    assert stored == 2 * 2 * 2  # steps x tasks x G, each once
    scored = TrajectoryStore(out / "trajectories").read_rewards()  # what the episode viewer shows
    assert sorted(scored.step.unique()) == [1, 2] and len(scored) == 8 and scored.episode_id.is_unique
    for _, g in scored.groupby(["step", "group"]):  # one good and one bad episode: advantages +-a, summing to 0
        assert len(g) == 2 and g.advantage.sum() == pytest.approx(0, abs=1e-5) and (g.advantage.abs() > 0.5).all()
        assert (g.sort_values("total").advantage.diff().dropna() > 0).all() and set(g.policy_version) == {g.step.iloc[0] - 1}
    res = train_rl(fsdp(small(tmp_path, 3)), path, str(syn_root), out, progress=False, engines=contrast_engine(path))
    assert [h["step"] for h in res["history"]] == [1, 2, 3]  # resumed, not restarted
    assert json.loads((out / "history.json").read_text())[-1]["step"] == 3


def test_ppo_with_a_value_head_trains_and_resumes_its_critic(ray_local, syn_root, tiny_models, tmp_path):
    out = tmp_path / "ppo"
    path = str(tiny_models["text"])
    cfg = small(tmp_path, 1)
    cfg.learner.estimator = "gae"
    res = train_rl(cfg, path, str(syn_root), out, progress=False, engines=contrast_engine(path))
    assert res["history"][0]["kept_episodes"] == 4 and res["history"][0]["value_loss"] > 0
    state = torch.load(out / "checkpoints" / "step_1" / "trainer_state.pt", weights_only=False)
    head = state["state"]["value_head"]
    assert any(v.abs().sum() > 0 for v in head.values())  # the critic moved from its zero init and was saved
    cfg.rl.steps = 2
    res = train_rl(cfg, path, str(syn_root), out, progress=False, engines=contrast_engine(path))
    assert [h["step"] for h in res["history"]] == [1, 2]
