"""What a command needs and the CPU default builds on first use: the synthetic dataset and
the tiny models, kept in the cache folder. Builds go to a temporary folder that is renamed
into place when complete, so a crash never leaves a half-built asset behind."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

from cluster.config import AppConfig


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """Run ``build(tmp)`` and rename ``tmp`` to ``target`` unless ``target`` already exists."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        tmp.rename(target)
    except OSError:
        if not target.exists():  # a concurrent builder did not win the race
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def dataset_root(cfg: AppConfig) -> Path:
    """The configured dataset root, or the synthetic dataset built in the cache."""
    if cfg.data.root:
        return Path(cfg.data.root).expanduser()
    from rollout.data.synthetic import DATA_VERSION, make_dataset

    syn = cfg.data.synthetic
    key = _digest({"seed": cfg.seed, "version": DATA_VERSION, **asdict(syn)})
    return build_once(cfg.cache_path / "data" / f"synthetic-{key}",
                      lambda tmp: make_dataset(tmp, seed=cfg.seed, cfg=syn))


def tiny_models_dir(cfg: AppConfig) -> Path:
    from policy.tiny import build_tiny_models, corpus_digest

    key = _digest({**asdict(cfg.policy.tiny), "corpus": corpus_digest()})
    return build_once(cfg.cache_path / "models" / f"tiny-{key}", lambda tmp: build_tiny_models(tmp, cfg.policy.tiny))


class PolicyKindError(ValueError):
    """``policy.kind`` does not match the checkpoint it names."""


def check_policy_kind(kind: str, path: str) -> None:
    """A local checkpoint's config must match ``policy.kind`` (a hub id is not checked here)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return
    import json

    c = json.loads(config.read_text())
    found = "vl" if "vision_config" in c else "text"
    if found != kind:
        arch = ", ".join(c.get("architectures") or [c.get("model_type", "?")])
        raise PolicyKindError(f"policy.kind={kind} but {path} is a {found} model ({arch}); "
                              f"set policy.kind={found} or point policy.path at a {kind} checkpoint")


def policy_path(cfg: AppConfig) -> str:
    """The configured policy (local path or hub id), or the tiny model of the configured kind."""
    if cfg.policy.path:
        path = os.path.expanduser(cfg.policy.path)
        check_policy_kind(cfg.policy.kind, path)
        return path
    from policy.tiny import TEXT_DIR, VL_DIR

    return str(tiny_models_dir(cfg) / (TEXT_DIR if cfg.policy.kind == "text" else VL_DIR))


def tiny_inpaint_dir(cfg: AppConfig) -> Path:
    """The tiny SD-inpainting pipeline (saved with ``save_pretrained``) for CPU runs of the diffusers backend."""
    from actors.tiny import save_tiny_inpaint_pipeline

    return build_once(cfg.cache_path / "models" / "tiny-inpaint-v1", lambda tmp: save_tiny_inpaint_pipeline(tmp / "pipe")) / "pipe"


def latest_policy(cfg: AppConfig, configured: Optional[str] = None) -> tuple[str, str]:
    """(path, what it is): the configured policy, else the newest GRPO, else SFT checkpoint."""
    from policy.checkpoint import CheckpointManager

    if configured:
        return os.path.expanduser(configured), "configured"
    for stage in ("grpo", "sft"):
        latest = CheckpointManager(Path(cfg.out_dir) / stage / "checkpoints").latest()
        if latest is not None and (latest / "model").is_dir():
            return str(latest / "model"), f"{stage} checkpoint"
    return policy_path(cfg), "untrained base policy (no checkpoint under out_dir)"
