"""Our reward as a verl custom reward function (``reward.custom_reward_function.path`` /
``name: compute_score`` in verl's config). The agent loop puts the episode record in
``extra_fields['episode']``, which verl hands to the reward function as ``extra_info``."""
from __future__ import annotations

from typing import Any, Dict, Optional

from rewards.config import RewardConfig
from rewards.reward import reward


def compute_score(data_source: str = "", solution_str: str = "", ground_truth: Any = None,
                  extra_info: Optional[Dict[str, Any]] = None, **kwargs) -> Dict[str, float]:
    episode = (extra_info or {}).get("episode")
    if episode is None:
        raise ValueError("compute_score needs the episode record in extra_info['episode'] (anomaly_agent loop)")
    parts = reward(episode, RewardConfig(**(kwargs.get("reward_config") or {})))
    return {"score": parts.total, "task": parts.task, "reflection": parts.reflection, "behaviour": parts.behaviour}
