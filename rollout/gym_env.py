"""A gymnasium view of one episode, for users who want RLlib's (or any gym) API.

Action: the text of one policy turn. Observation: the text the policy reads next (the
prompt on reset, then each tool result). Reward: 0 per turn; at the end, the task reward
of the answered image (mean of its QE location and quality scores, scaled to [0, 1]).
Unlike the rollout path, actions arrive as text and are tokenized here: this view is for
API compatibility, not for token-exact training.
"""
from __future__ import annotations

import asyncio
import string
from typing import Any, Dict, Optional, Sequence

import gymnasium as gym

from rollout.config import EpisodeConfig
from rollout.episode import EpisodeRunner, Generation
from rollout.tasks import Task

CHARSET = string.printable
MAX_TEXT = 8192


class _NoLLM:
    async def generate(self, *args, **kwargs):  # the env is driven by step(), never by a model
        raise RuntimeError("AnomalyEpisodeEnv is driven by step(action)")


class AnomalyEpisodeEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, tasks: Sequence[Task], tokenizer, tools: Dict[str, Any], episode_cfg: Optional[EpisodeConfig] = None):
        if not tasks:
            raise ValueError("AnomalyEpisodeEnv needs at least one task")
        self.tasks, self.tok, self.tools = list(tasks), tokenizer, tools
        self.cfg = episode_cfg or EpisodeConfig()
        self.observation_space = gym.spaces.Text(MAX_TEXT, min_length=0, charset=CHARSET)
        self.action_space = gym.spaces.Text(self.cfg.max_turn_tokens * 4, min_length=0, charset=CHARSET)
        self._loop = asyncio.new_event_loop()
        self._runner: Optional[EpisodeRunner] = None

    def _clip(self, text: str) -> str:
        text = "".join(c for c in text if c in CHARSET)
        return text[-MAX_TEXT:]

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        self._runner = EpisodeRunner(task, task.load_image(), self.tok, _NoLLM(), self.tools, self.cfg)
        obs = self.tok.decode(self._runner.ep.prompt_ids, skip_special_tokens=False)
        return self._clip(obs), {"task_id": task.task_id}

    def step(self, action: str):
        if self._runner is None:
            raise RuntimeError("call reset() before step()")
        ep = self._runner.ep
        before = len(ep.response_ids)
        ids = self.tok.encode(str(action), add_special_tokens=False)
        done = self._loop.run_until_complete(self._runner.step(Generation(ids, [0.0] * len(ids), "completed")))
        new = [t for t, m in zip(ep.response_ids[before:], ep.response_mask[before:]) if not m]
        obs = self._clip(self.tok.decode(new, skip_special_tokens=False))
        reward = 0.0
        if done and ep.status == "answer":
            qe = ep.image_meta[ep.answer["final_image_index"]].get("qe")
            if qe:
                reward = float((qe["location_score"] + qe["quality_score"]) / 10.0)
        terminated = done and ep.status == "answer"
        truncated = done and not terminated
        return obs, reward, terminated, truncated, {"actions": list(ep.actions), "status": ep.status}

    def close(self):
        if self._loop.is_closed():
            return
        pending = asyncio.all_tasks(self._loop)  # e.g. the tool batchers' workers
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()
