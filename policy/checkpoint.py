"""Checkpoints that survive a crash at any moment.

A checkpoint is written to ``.tmp-step_N``, marked complete, renamed to ``step_N``; only
then is the tracker file ``latest`` replaced atomically. Older checkpoints beyond
``keep_last`` are deleted only after that, so the last good checkpoint always exists. A
folder without its ``COMPLETE`` marker is never loaded. The marker holds the SHA-256 of
every file written before it; ``latest`` verifies them and passes over a damaged
checkpoint (a corrupt weight file, a tracker naming a missing step), saying which file and
which step it took instead. A failed write (a full disk) removes its temporary folder and
leaves the previous checkpoint the latest.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from policy.faults import fault_point

TRACKER = "latest"
MARKER = "COMPLETE"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def damage(path: Path) -> Optional[str]:
    """What is wrong with a checkpoint folder (None: complete and intact)."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return f"{path} has no {MARKER} marker"
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(Path(path).rglob("*")) if p.is_file())
    return _damage(str(path), stamp)


@lru_cache(maxsize=32)
def _damage(path: str, stamp) -> Optional[str]:
    text = (Path(path) / MARKER).read_text().strip()
    try:
        expected = json.loads(text)["sha256"]
    except (ValueError, KeyError, TypeError):
        return None  # a marker from before digests were written: trusted as complete
    for rel, digest in expected.items():
        f = Path(path) / rel
        if not f.is_file():
            return f"{f} is missing"
        if sha256_file(f) != digest:
            return f"{f} is corrupt (its SHA-256 differs from the one recorded at save)"
    return None


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
        """The tracker's checkpoint if it is intact, else the newest intact one (said on stderr)."""
        tracker = self.root / TRACKER
        named = self.root / tracker.read_text().strip() if tracker.is_file() else None
        problem = None
        if named is not None:
            problem = damage(named) if named.is_dir() else f"{tracker} names {named.name}, which does not exist"
            if problem is None:
                return named
        for step in reversed(self.steps()):  # tracker missing, stale or damaged: the newest intact folder
            path = self.root / f"step_{step}"
            bad = damage(path)
            if bad is None:
                if problem:
                    print(f"checkpoint: {problem}; using {path}", file=sys.stderr)
                return path
            problem = problem or bad
            print(f"checkpoint: {bad}; passing over it", file=sys.stderr)
        if problem:
            print(f"checkpoint: {problem}; no intact checkpoint in {self.root}", file=sys.stderr)
        return None

    def save(self, step: int, model, optimizer=None, scheduler=None, tokenizer=None,
             state: Optional[Dict[str, Any]] = None, model_state: Optional[Dict[str, torch.Tensor]] = None,
             optimizer_state: Optional[Dict[str, Any]] = None) -> Path:
        """``model_state``/``optimizer_state``: full states gathered beforehand (sharded
        learners), written instead of ``model``'s and ``optimizer``'s own."""
        final = self.root / f"step_{step}"
        tmp = self.root / f".tmp-step_{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            model.save_pretrained(tmp / "model", state_dict=model_state)
            fault_point("checkpoint_write", step)  # reliability suite: a crash with the folder half written
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp / "model")
            if optimizer_state is None and optimizer is not None:
                optimizer_state = optimizer.state_dict()
            torch.save({"step": step, "optimizer": optimizer_state,
                        "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng_state(),
                        "state": state or {}}, tmp / "trainer_state.pt")
            (tmp / MARKER).write_text(json.dumps({"step": step, "sha256": file_digests(tmp)}))
        except OSError:  # e.g. the disk is full: the previous checkpoint stays the latest
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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

        problem = damage(Path(path))
        if problem:
            raise FileNotFoundError(f"{path} is not a usable checkpoint: {problem}")
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
