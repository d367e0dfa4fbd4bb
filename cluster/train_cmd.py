"""``anomalyagent train``: GRPO from the SFT checkpoint (SFT first when there is none)."""
from __future__ import annotations

import os
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
    import ray

    from cluster.assets import dataset_root, policy_path
    from cluster.ray_session import cluster_session
    from policy.faults import FAULT_ENV
    from cluster.rl_loop import train_rl

    fault = os.environ.get(FAULT_ENV)
    with cluster_session(cfg, learner=True):  # an impossible preset fails here, before SFT
        root = str(dataset_root(cfg))
        policy = sft_checkpoint(cfg, root, policy_path(cfg), out / "sft")
        for attempt in range(cfg.rl.max_restarts + 1):
            try:  # a fault point (if any) is armed for the first attempt only
                return train_rl(cfg, policy, root, out / "grpo",
                                learner_env={FAULT_ENV: fault} if fault and attempt == 0 else None)
            except ray.exceptions.RayActorError as e:
                if attempt == cfg.rl.max_restarts:
                    raise
                print(f"train: a learner process died ({type(e).__name__}); resuming from the last complete "
                      f"checkpoint (restart {attempt + 1} of {cfg.rl.max_restarts})", flush=True)
