"""Weights and constants of the three-part reward (design.md §5; none are published)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RewardConfig:
    alpha: float = 1.0  # task
    beta: float = 0.5  # reflection
    gamma: float = 0.2  # behaviour
    pass_bonus: float = 0.5  # added to R_task when the answered image passed QE and has a mask (ours)
    location_weight: float = 0.5  # S = (w_loc * location + (1 - w_loc) * quality) / 5, in [0, 1]
    invalid_transition: float = 0.5  # -Φ for a transition outside the allowed table
    error_action: float = 0.5  # -Φ for a turn that failed to parse or was refused by a tool
    kr_bonus: float = 0.2  # λ_KR
    kr_threshold: float = 0.6  # δ on S
    turn_penalty: float = 0.1  # λ_T
    max_turns: int = 8  # T_max
    normalize: str = "sum_first"  # sum_first | per_component (GDPO-style, per group)
