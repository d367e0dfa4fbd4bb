"""The reward actor: scores finished trajectories in batches as they stream out of the
rollout manager. ``RewardStream`` is the manager callback that feeds it."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from rewards.config import RewardConfig
from rewards.reward import masked_images, reward

SCORED_FIELDS = ("status", "answer", "qe_scores", "actions", "format_ok", "turns")


def slim(record: Dict[str, Any]) -> Dict[str, Any]:
    """The part of an episode record the reward reads (no images through the object store)."""
    return {"episode_id": record["episode_id"], **{k: record[k] for k in SCORED_FIELDS},
            "masked_images": masked_images(record)}


class RewardActor:
    def __init__(self, cfg: Optional[RewardConfig] = None):
        self.cfg = cfg or RewardConfig()
        self.scored = 0

    def score(self, records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        self.scored += len(records)
        return [{"episode_id": r["episode_id"], **reward(r, self.cfg).as_dict()} for r in records]

    def count(self) -> int:
        return self.scored


class RewardStream:
    """Rollout-manager callback: batches finished episodes to the reward actor without
    waiting; ``results()`` collects every score once the rollout is done."""

    def __init__(self, actor, batch_size: int = 16):
        self.actor, self.batch_size = actor, batch_size
        self._pending: List[Dict[str, Any]] = []
        self._refs: List[Any] = []

    def __call__(self, record: Dict[str, Any], extra: Dict[str, Any]) -> None:
        self._pending.append(slim(record))
        if len(self._pending) >= self.batch_size:
            self._send()

    def _send(self) -> None:
        if self._pending:
            self._refs.append(self.actor.score.remote(self._pending))
            self._pending = []

    def results(self) -> Dict[str, Dict[str, float]]:
        import ray

        self._send()
        out = {}
        for batch in ray.get(self._refs):
            for r in batch:
                out[r["episode_id"]] = r
        self._refs = []
        return out
