"""Torn and corrupted files, one of each kind, against the real readers.

Each case damages a file the way a crash or a bad disk does and asks the reader that meets
it in practice. A case is *detected* when the reader names the file and either skips it (so
the item is made again) or refuses with a message; a traceback of another kind or a silent
wrong result counts as undetected. ``corrupt_files_undetected`` in ``bench faults`` is the
number of undetected cases (target 0).
"""
from __future__ import annotations

import contextlib
import errno
import io
import tempfile
from pathlib import Path
from typing import Callable, Dict

import numpy as np
from PIL import Image


def _torn_parquet(tmp: Path) -> bool:
    from rollout.store import TrajectoryStore

    store = TrajectoryStore(tmp / "store")
    for eid in ("ep-1", "ep-2"):
        store.write(_record(eid))
    torn = store.path_of("ep-2")
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        ids = TrajectoryStore(tmp / "store").ids()
    return ids == ["ep-1"] and str(torn) in err.getvalue()


def _half_png(tmp: Path) -> bool:
    from benchmarks.protocol import DatasetError, _check_decodes

    png = tmp / "half.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:60])
    try:
        _check_decodes(png)
    except DatasetError as e:
        return str(png) in str(e)
    return False


def _checkpoint(tmp: Path, policy: str) -> Dict[str, bool]:
    import torch
    from transformers import AutoModelForCausalLM

    from policy.checkpoint import CheckpointManager

    model = AutoModelForCausalLM.from_pretrained(policy)
    ck = CheckpointManager(tmp / "ckpt", keep_last=3)
    for step in (1, 2):
        ck.save(step, model)
    weights = next((tmp / "ckpt" / "step_2" / "model").glob("*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, marker present
    weights.write_bytes(bytes(blob))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        corrupt = ck.latest().name == "step_1" and str(weights) in err.getvalue()
        (tmp / "ckpt" / "latest").write_text("step_9")
        tracker = ck.latest().name == "step_1" and "step_9" in err.getvalue()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_save, torch.save = torch.save, full  # the disk fills while the trainer state is written
    try:
        try:
            ck.save(3, model)
            disk_full = False
        except OSError:
            disk_full = True
    finally:
        torch.save = real_save
    with contextlib.redirect_stderr(io.StringIO()):
        disk_full = disk_full and ck.latest().name == "step_1" and not (tmp / "ckpt" / "step_3").exists()
    return {"corrupt_weights": corrupt, "tracker_missing_step": tracker, "disk_full_keeps_previous": disk_full}


def _record(eid: str) -> dict:
    img = np.zeros((8, 8, 3), np.uint8)
    return {"episode_id": eid, "images": [img], "masks": {}, "task": {"task_id": eid, "category": "c",
            "defect_type": "d"}, "prompt_ids": [1], "response_ids": [2], "response_mask": [1],
            "response_logprobs": [0.0], "tool_log": [], "qe_scores": [], "actions": ["answer"], "format_ok": [True],
            "turns": 1, "status": "answer", "answer": {"status": "failure"}, "image_meta": [{"source": "normal"}],
            "timings": {"generate_s": 0.0, "tools_s": 0.0}}


def corrupt_files_check(policy: str) -> Dict[str, bool]:
    """{case: detected} for the torn Parquet episode, the half-written PNG, the corrupt weight
    file, the tracker naming a missing step and the full disk during a checkpoint."""
    cases: Dict[str, Callable[[Path], object]] = {"torn_parquet": _torn_parquet, "half_png": _half_png}
    out: Dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="faults-files-") as d:
        for name, fn in cases.items():
            try:
                out[name] = bool(fn(Path(d)))
            except Exception:  # noqa: BLE001 - a traceback is an undetected case
                out[name] = False
        try:
            out.update(_checkpoint(Path(d), policy))
        except Exception:  # noqa: BLE001
            out.update({"corrupt_weights": False, "tracker_missing_step": False, "disk_full_keeps_previous": False})
    return out
