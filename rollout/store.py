"""Trajectory store: one Parquet row per episode, images and masks as PNG files.

Each episode is one Parquet file ``episodes/<episode_id>.parquet`` written to a temporary
name and renamed into place, so a crash never leaves a half-written row and the episode id
makes a second write a no-op. The folder reads as one table with pandas or duckdb
(``pd.read_parquet(root / "episodes")``). Images are written before the row, so a row
always points at files that exist.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from rollout.atomic import atomic_png

SCHEMA = pa.schema([
    ("episode_id", pa.string()), ("task_id", pa.string()), ("group", pa.string()), ("category", pa.string()),
    ("defect_type", pa.string()), ("prompt_ids", pa.list_(pa.int32())), ("response_ids", pa.list_(pa.int32())),
    ("response_mask", pa.list_(pa.int8())), ("response_logprobs", pa.list_(pa.float32())),
    ("tool_log", pa.string()), ("qe_scores", pa.string()), ("actions", pa.list_(pa.string())),
    ("format_ok", pa.list_(pa.bool_())), ("turns", pa.int32()), ("status", pa.string()), ("answer", pa.string()),
    ("image_paths", pa.list_(pa.string())), ("mask_paths", pa.string()), ("image_meta", pa.string()),
    ("rewards", pa.string()), ("node_id", pa.string()), ("worker", pa.string()), ("attempt", pa.int32()),
    ("generate_s", pa.float64()), ("tools_s", pa.float64()),
    ("shown_images", pa.list_(pa.int32())),  # VL policies: indices of the images in the token stream, in order
    ("turn_grammars", pa.string()),  # JSON list: the grammar of each policy turn, null where sampled freely
    ("knowledge", pa.string()),  # how the task's knowledge entry was obtained (actors.knowledge_base.SOURCES)
])
# GRPO's per-step scores (rewards/step_NNNNNN.parquet): known only once a step's episodes are
# scored, after they were stored. ``policy_version``: the checkpoint step that sampled them.
REWARD_SCHEMA = pa.schema([
    ("episode_id", pa.string()), ("group", pa.string()), ("step", pa.int32()), ("policy_version", pa.int32()),
    ("task", pa.float64()), ("reflection", pa.float64()), ("behaviour", pa.float64()), ("total", pa.float64()),
    ("reward", pa.float64()), ("advantage", pa.float64()),
])
def intact(path: Path) -> bool:
    """A whole Parquet file: its footer reads and it holds one row group at least."""
    try:
        return pq.read_metadata(path).num_rows > 0
    except (OSError, ValueError, pa.ArrowException):
        return False


_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class TrajectoryStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.episodes = self.root / "episodes"
        self.images = self.root / "images"
        self.episodes.mkdir(parents=True, exist_ok=True)
        self.images.mkdir(parents=True, exist_ok=True)

    def path_of(self, episode_id: str) -> Path:
        if not _SAFE.match(episode_id):
            raise ValueError(f"episode id {episode_id!r} must match {_SAFE.pattern}")
        return self.episodes / f"{episode_id}.parquet"

    def has(self, episode_id: str) -> bool:
        path = self.path_of(episode_id)
        return path.exists() and intact(path)

    def ids(self) -> List[str]:
        """Ids of the intact episodes; a damaged file (torn, truncated) is named on stderr and
        left out, so its episode is run again and ``write`` replaces it."""
        out = []
        for p in sorted(self.episodes.glob("*.parquet")):
            if intact(p):
                out.append(p.stem)
            else:
                print(f"trajectory store: {p} is damaged (not a readable Parquet file); its episode will be run again",
                      file=sys.stderr)
        return out

    def write(self, record: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> bool:
        """Store one episode record (``Episode.record()`` plus ``extra`` columns).
        Returns False, writing nothing, when the episode is already stored."""
        eid = record["episode_id"]
        target = self.path_of(eid)
        if target.exists():
            if intact(target):
                return False
            target.unlink()  # a damaged copy of this episode: replaced
        extra = extra or {}
        folder = self.images / eid
        folder.mkdir(exist_ok=True)
        image_paths = []
        for k, img in enumerate(record["images"]):
            p = folder / f"{k}.png"
            atomic_png(img, p)
            image_paths.append(str(p.relative_to(self.root)))
        mask_paths = {}
        for k, mask in record.get("masks", {}).items():
            p = folder / f"{k}_mask.png"
            atomic_png(mask, p)
            mask_paths[str(k)] = str(p.relative_to(self.root))
        task = record["task"]
        row = {
            "episode_id": eid, "task_id": task["task_id"], "group": extra.get("group", task["task_id"]),
            "category": task["category"], "defect_type": task["defect_type"],
            "prompt_ids": record["prompt_ids"], "response_ids": record["response_ids"],
            "response_mask": record["response_mask"], "response_logprobs": record["response_logprobs"],
            "tool_log": json.dumps(record["tool_log"], default=str), "qe_scores": json.dumps(record["qe_scores"]),
            "actions": record["actions"], "format_ok": record["format_ok"], "turns": record["turns"],
            "status": record["status"], "answer": json.dumps(record["answer"]), "image_paths": image_paths,
            "mask_paths": json.dumps(mask_paths), "image_meta": json.dumps(record["image_meta"], default=str),
            "rewards": json.dumps(extra.get("rewards")), "node_id": extra.get("node_id", ""),
            "worker": extra.get("worker", ""), "attempt": int(extra.get("attempt", 1)),
            "generate_s": float(record["timings"]["generate_s"]), "tools_s": float(record["timings"]["tools_s"]),
            "shown_images": list(record.get("shown_images", [])),
            "turn_grammars": json.dumps(record.get("turn_grammars", [])),
            "knowledge": task.get("knowledge", "shipped"),
        }
        table = pa.Table.from_pylist([row], schema=SCHEMA)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        try:
            os.link(tmp, target)  # atomic, and fails if another writer got there first
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def remove(self, episode_ids: Iterable[str]) -> int:
        """Forget episodes (rows and images), e.g. those of a training step that never finished."""
        import shutil

        n = 0
        for eid in episode_ids:
            path = self.path_of(eid)
            if path.exists():
                path.unlink()
                n += 1
            shutil.rmtree(self.images / eid, ignore_errors=True)
        return n

    def read(self, columns: Optional[Iterable[str]] = None):
        """All stored episodes as a pandas DataFrame."""
        import pandas as pd

        ids = self.ids()
        if not ids:
            return pd.DataFrame(columns=list(columns or SCHEMA.names))
        files = [str(self.path_of(i)) for i in ids]  # damaged files are left out (and named)
        return pq.read_table(files, schema=SCHEMA, columns=list(columns) if columns else None).to_pandas()

    def write_rewards(self, step: int, rows: List[Dict[str, Any]]) -> Path:
        """One training step's reward parts and advantages (``REWARD_SCHEMA``), atomically."""
        folder = self.root / "rewards"
        folder.mkdir(exist_ok=True)
        target = folder / f"step_{step:06d}.parquet"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=REWARD_SCHEMA), tmp)
        os.replace(tmp, target)
        return target

    def read_rewards(self):
        """Every step's rewards as a DataFrame (empty when none were written)."""
        import pandas as pd

        files = sorted((self.root / "rewards").glob("step_*.parquet"))
        if not files:
            return pd.DataFrame(columns=REWARD_SCHEMA.names)
        return pa.concat_tables([pq.read_table(f, schema=REWARD_SCHEMA) for f in files]).to_pandas()

    def load_image(self, relative: str) -> np.ndarray:
        return np.asarray(Image.open(self.root / relative).convert("RGB"))
