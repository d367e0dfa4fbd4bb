"""``anomalyagent train``: GRPO from the SFT checkpoint (SFT first when there is none)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from cluster.config import AppConfig


def sft_checkpoint(cfg: AppConfig, root: str, base: str, sft_out: Path) -> str:
    """The latest SFT checkpoint under ``sft_out``, training one when there is none."""
    from cluster.sft_cmd import build_and_train
    from policy.checkpoint import CheckpointManager

    latest = CheckpointManager(sft_out / "checkpoints").latest()
    if latest is not None and (latest / "model").is_dir():
        return str(latest / "model")
    print(f"no SFT checkpoint in {sft_out}: running SFT first")
    return build_and_train(cfg, root, base, sft_out)["checkpoint"]


def run_train(cfg: AppConfig, out: Path) -> Dict[str, Any]:
    from cluster.assets import dataset_root, policy_path
    from cluster.ray_session import cluster_session
    from policy.rl_loop import train_rl

    with cluster_session(cfg, learner=True):  # an impossible preset fails here, before SFT
        root = str(dataset_root(cfg))
        policy = sft_checkpoint(cfg, root, policy_path(cfg), out / "sft")
        return train_rl(cfg, policy, root, out / "grpo")
