"""The three-part reward of design.md §5, computed from an episode record.

    R      = α·R_task + β·R_ref + γ·R_beh
    R_task = S_final + b·1[pass]                      (QE score of the answered image; b = pass_bonus, ours)
    R_ref  = Σ_m max(0, S_m − S_{m−1})                (consecutive QE-scored generations)
    R_beh  = Σ_t [Φ(a_{t−1}, a_t) + λ_KR·1[a_t = KR ∧ S_t < δ]] + 1[format ok] − λ_T·max(0, T − T_max)

S is a QE result scaled to [0, 1]: (w·location + (1 − w)·quality) / 5. Where the paper is
silent we decide, and say so: Φ is 0 for an allowed transition and −invalid_transition
otherwise (table below); a turn that failed to parse or that a tool refused is an action
``error`` with Φ = −error_action; S_t for the KR bonus is the latest QE score before the KR
call (no score yet: no bonus); an episode without a valid answer has S_final = 0; "format
ok" means every turn parsed and the episode ended with a valid answer. Ours too: R_task adds
``pass_bonus`` when the answered image passed QE and has its mask — what the delivery gate
asks of a sample — so the reward pays for a deliverable sample, not only for a high score.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rewards.config import RewardConfig

START = "start"
# a_{t-1} -> allowed a_t
ALLOWED = {
    START: {"prompt_gen", "knowledge", "image_gen"},
    "prompt_gen": {"image_gen", "knowledge"},
    "knowledge": {"image_gen", "prompt_gen"},
    "image_gen": {"quality_eval", "mask_gen"},
    "quality_eval": {"image_gen", "knowledge", "mask_gen", "answer", "prompt_gen"},
    "mask_gen": {"answer", "quality_eval"},
}


@dataclass(frozen=True)
class RewardParts:
    task: float
    reflection: float
    behaviour: float
    total: float

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


def scaled(score: Dict[str, Any], cfg: RewardConfig) -> float:
    w = cfg.location_weight
    return (w * float(score["location_score"]) + (1 - w) * float(score["quality_score"])) / 5.0


def masked_images(record: Dict[str, Any]) -> List[int]:
    """The images the episode made a mask of (a slim record carries the list, a full one the masks)."""
    if "masked_images" in record:
        return list(record["masked_images"])
    return sorted(int(k) for k in record.get("masks", {}))


def _task(record: Dict[str, Any], cfg: RewardConfig) -> float:
    answer = record.get("answer")
    if record.get("status") != "answer" or not answer:
        return 0.0
    idx = answer.get("final_image_index")
    scores = [s for s in record["qe_scores"] if s["image_index"] == idx]
    if not scores:
        return 0.0
    gated = bool(scores[-1].get("pass")) and idx in masked_images(record)  # what the delivery gate asks
    return scaled(scores[-1], cfg) + (cfg.pass_bonus if gated else 0.0)


def _reflection(record: Dict[str, Any], cfg: RewardConfig) -> float:
    seen, per_generation = set(), []
    for s in record["qe_scores"]:  # first score of each generation, in order
        if s["image_index"] not in seen:
            seen.add(s["image_index"])
            per_generation.append(scaled(s, cfg))
    return float(sum(max(0.0, b - a) for a, b in zip(per_generation, per_generation[1:])))


def _actions(record: Dict[str, Any]) -> List[str]:
    return ["error" if a.startswith("error:") else a for a in record["actions"]]


def _behaviour(record: Dict[str, Any], cfg: RewardConfig) -> float:
    total, prev = 0.0, START
    qe_by_turn = {s["turn"]: s for s in record["qe_scores"]}
    latest: Optional[float] = None
    for turn, a in enumerate(_actions(record), start=1):
        if a == "error":
            total -= cfg.error_action
        elif prev != "error" and a not in ALLOWED.get(prev, set()):
            total -= cfg.invalid_transition
        if a == "knowledge" and latest is not None and latest < cfg.kr_threshold:
            total += cfg.kr_bonus
        if turn in qe_by_turn:
            latest = scaled(qe_by_turn[turn], cfg)
        prev = a
    format_ok = record.get("status") == "answer" and all(record["format_ok"]) and "error" not in _actions(record)
    total += 1.0 if format_ok else 0.0
    total -= cfg.turn_penalty * max(0, record["turns"] - cfg.max_turns)
    return float(total)


def reward(record: Dict[str, Any], cfg: RewardConfig) -> RewardParts:
    t, r, b = _task(record, cfg), _reflection(record, cfg), _behaviour(record, cfg)
    return RewardParts(t, r, b, cfg.alpha * t + cfg.beta * r + cfg.gamma * b)


def group_rewards(parts: Sequence[RewardParts], cfg: RewardConfig, eps: float = 1e-6) -> np.ndarray:
    """The scalar each episode of one group trains on.

    ``sum_first``: the weighted total (GRPO then normalizes it over the group).
    ``per_component``: each component is normalized over the group first, then the weighted
    sum is taken (as verl's GDPO estimator does), so no component drowns the others.
    """
    if cfg.normalize == "sum_first":
        return np.array([p.total for p in parts], dtype=np.float64)
    if cfg.normalize != "per_component":
        raise ValueError(f"reward.normalize must be sum_first or per_component, got {cfg.normalize!r}")
    out = np.zeros(len(parts))
    for weight, name in ((cfg.alpha, "task"), (cfg.beta, "reflection"), (cfg.gamma, "behaviour")):
        x = np.array([getattr(p, name) for p in parts], dtype=np.float64)
        out += weight * (x - x.mean()) / (x.std() + eps)
    return out
