import pytest
from gymnasium.utils.env_checker import check_env
from transformers import AutoTokenizer

from rollout.config import EpisodeConfig
from rollout.data import MVTecAD
from rollout.gym_env import AnomalyEpisodeEnv
from rollout.tasks import make_tasks
from tests.scripted import WELL_FORMED, local_tools


@pytest.fixture(scope="module")
def env(tiny_models, syn_root):
    tok = AutoTokenizer.from_pretrained(tiny_models["text"])
    tasks = [t for t in make_tasks(MVTecAD(syn_root), ["syn_pill"]) if t.defect_type == "crack"]
    env = AnomalyEpisodeEnv(tasks, tok, local_tools(), EpisodeConfig(max_turns=10))
    yield env
    env.close()


def test_gymnasium_env_checker_accepts_it(env):
    check_env(env, skip_render_check=True)


def test_scripted_episode_through_the_gym_api(env):
    obs, info = env.reset(seed=0)
    assert "syn_pill" in obs and info["task_id"].startswith("syn_pill-crack")
    rewards = []
    for turn in WELL_FORMED:
        obs, reward, terminated, truncated, info = env.step(turn)
        rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["status"] == "answer"
    assert rewards[:-1] == [0.0] * (len(rewards) - 1) and 0 < rewards[-1] <= 1
    obs, *_ = env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step("nonsense }{")
    assert '"error": "no_action"' in obs and not terminated and not truncated
