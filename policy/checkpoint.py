"""Checkpoints that survive a crash at any moment.

A checkpoint is written to ``.tmp-step_N``, marked complete, renamed to ``step_N``; only
then is the tracker file ``latest`` replaced atomically. Older checkpoints beyond
``keep_last`` are deleted only after that, so the last good checkpoint always exists. A
folder without its ``COMPLETE`` marker is never loaded.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from policy.faults import fault_point

TRACKER = "latest"
MARKER = "COMPLETE"


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class CheckpointManager:
    def __init__(self, root: str | os.PathLike, keep_last: int = 2):
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last

    def steps(self):
        return sorted(int(p.name.split("_")[1]) for p in self.root.glob("step_*") if (p / MARKER).exists())

    def latest(self) -> Optional[Path]:
        tracker = self.root / TRACKER
        if tracker.is_file():
            path = self.root / tracker.read_text().strip()
            if (path / MARKER).exists():
                return path
        done = self.steps()  # tracker missing or stale: fall back to the newest complete folder
        return self.root / f"step_{done[-1]}" if done else None

    def save(self, step: int, model, optimizer=None, scheduler=None, tokenizer=None,
             state: Optional[Dict[str, Any]] = None, model_state: Optional[Dict[str, torch.Tensor]] = None,
             optimizer_state: Optional[Dict[str, Any]] = None) -> Path:
        """``model_state``/``optimizer_state``: full states gathered beforehand (sharded
        learners), written instead of ``model``'s and ``optimizer``'s own."""
        final = self.root / f"step_{step}"
        tmp = self.root / f".tmp-step_{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_pretrained(tmp / "model", state_dict=model_state)
        fault_point("checkpoint_write", step)  # reliability suite: a crash with the folder half written
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        if optimizer_state is None and optimizer is not None:
            optimizer_state = optimizer.state_dict()
        torch.save({"step": step, "optimizer": optimizer_state,
                    "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng_state(),
                    "state": state or {}}, tmp / "trainer_state.pt")
        (tmp / MARKER).write_text(str(step))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        tracker_tmp = self.root / f".{TRACKER}.tmp"
        tracker_tmp.write_text(final.name)
        os.replace(tracker_tmp, self.root / TRACKER)  # the tracker is written last
        for old in self.steps()[: -self.keep_last]:
            if old != step:
                shutil.rmtree(self.root / f"step_{old}", ignore_errors=True)
        return final

    @staticmethod
    def read(path: Path):
        """(full model state dict, trainer blob) of a complete checkpoint, applied to nothing."""
        from transformers import AutoModelForCausalLM

        if not (Path(path) / MARKER).exists():
            raise FileNotFoundError(f"{path} is not a complete checkpoint")
        loaded = AutoModelForCausalLM.from_pretrained(Path(path) / "model")
        return loaded.state_dict(), torch.load(Path(path) / "trainer_state.pt", weights_only=False)

    def load(self, path: Path, model, optimizer=None, scheduler=None, restore_rng: bool = True) -> Dict[str, Any]:
        model_state, blob = self.read(path)
        model.load_state_dict(model_state)
        if optimizer is not None and blob["optimizer"] is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None and blob["scheduler"] is not None:
            scheduler.load_state_dict(blob["scheduler"])
        if restore_rng:
            set_rng_state(blob["rng"])
        return {"step": blob["step"], **blob["state"]}
