"""``anomalyagent synthesize``: run the (trained) agent over a dataset's normal images for
every target category and defect type, and write the layout the benchmarks read::

    OUT/<category>/<defect>/image/NNN.png
    OUT/<category>/<defect>/mask/NNN.png
    OUT/trajectories/            (the episodes, Parquet + PNG)
    OUT/samples/<episode>.json   (which image was chosen and how)
    OUT/summary.json

Samples are written as episodes finish (image, then mask, each atomically), so a crash
loses at most the episodes in flight; a rerun skips every sample whose mask exists.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from cluster.config import AppConfig


def sample_paths(out: Path, category: str, defect: str, k: int) -> tuple[Path, Path]:
    folder = out / category / defect
    return folder / "image" / f"{k:03d}.png", folder / "mask" / f"{k:03d}.png"


def synthesis_tasks(ds, categories: Sequence[str], per_defect: int, seed: int):
    """One task per (category, defect type of the dataset, k), cycling over train/good."""
    from rollout.tasks import Task

    tasks = []
    for cat in categories:
        normals = ds.train(cat)
        if not normals:
            from rollout.data.types import DatasetError

            raise DatasetError(f"category {cat!r} has no train/good images to synthesize on")
        for defect in ds.defect_types(cat):
            for k in range(per_defect):
                img = normals[k % len(normals)].image
                tasks.append((k, Task(f"syn-{cat}-{defect}-{k:03d}", cat, defect, str(img), seed * 100003 + len(tasks))))
    return tasks


class SampleWriter:
    """The manager's ``on_episode`` callback: finalize one episode and write its sample."""

    def __init__(self, out: Path, tools: Dict[str, Any], index_of: Dict[str, int]):
        self.out, self.tools, self.index_of = out, tools, index_of
        self.sources: Counter = Counter()
        (out / "samples").mkdir(parents=True, exist_ok=True)

    def __call__(self, record: Dict[str, Any], extra: Dict[str, Any]) -> None:
        from rollout.finalize import finalize
        from rollout.store import atomic_png

        task = record["task"]
        k = self.index_of[task["task_id"]]
        sample = asyncio.run(finalize(record, self.tools, seed=int(task["seed"])))
        image_path, mask_path = sample_paths(self.out, task["category"], task["defect_type"], k)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_png(sample.image, image_path)
        atomic_png(sample.mask, mask_path)  # written last: its presence marks the sample done
        meta = {"episode_id": record["episode_id"], "source": sample.source, "image_index": sample.image_index,
                "status": record["status"], "actions": record["actions"], "normal": task["image_path"],
                "image": str(image_path.relative_to(self.out)), "mask": str(mask_path.relative_to(self.out))}
        (self.out / "samples" / f"{record['episode_id']}.json").write_text(json.dumps(meta, indent=1))
        self.sources[sample.source] += 1


def run_synthesize(cfg: AppConfig, data: Optional[str], out: Path, categories: Optional[List[str]] = None,
                   engines: Optional[List[Any]] = None) -> Dict[str, Any]:
    """``engines`` replaces the generation engines (tests inject scripted ones)."""
    from cluster.assets import dataset_root, latest_policy
    from cluster.ray_session import cluster_session
    from cluster.runtime import start_runtime
    from rollout.data import open_dataset
    from rollout.store import TrajectoryStore

    root = data or str(dataset_root(cfg))
    cats = categories or list(cfg.data.target_categories)
    ds = open_dataset(cfg.data.format, root, cats, cfg.data.visa_type_table)
    policy, what = latest_policy(cfg, cfg.synthesize.policy)
    print(f"synthesize: policy {policy} ({what}); {len(cats)} categories from {root} -> {out}")
    todo = [(k, t) for k, t in synthesis_tasks(ds, ds.categories, cfg.synthesize.per_defect, cfg.seed)
            if not sample_paths(out, t.category, t.defect_type, k)[1].exists()]
    total = sum(len(ds.defect_types(c)) for c in ds.categories) * cfg.synthesize.per_defect
    if (out / "trajectories").is_dir():  # stored before a crash, sample never written: run it again
        TrajectoryStore(out / "trajectories").remove([t.task_id for _, t in todo])
    print(f"synthesize: {total - len(todo)} of {total} samples already written, {len(todo)} to go")
    result: Dict[str, Any] = {"out": str(out), "policy": policy, "policy_kind": what, "samples": total,
                              "new": len(todo), "sources": {}}
    if todo:
        with cluster_session(cfg):
            rt = start_runtime(cfg, policy, out / "trajectories", engines=engines)
            writer = SampleWriter(out, rt.tools, {t.task_id: k for k, t in todo})
            rt.manager.on_episode.append(writer)
            try:
                specs = rt.manager.specs([t for _, t in todo], group_size=1)
                for s in specs:  # one episode per sample: its id is the task id
                    s.episode_id = s.task.task_id
                report = rt.manager.run(specs, keep_records=False)
            finally:
                rt.shutdown()
        result.update(sources=dict(writer.sources), lost=report.lost, retried=report.retried,
                      wall_s=round(report.wall_s, 1))
    summary = _summary(out)
    result["all_sources"] = summary
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def _summary(out: Path) -> Dict[str, int]:
    counts: Counter = Counter()
    for p in (out / "samples").glob("*.json") if (out / "samples").is_dir() else ():
        counts[json.loads(p.read_text())["source"]] += 1
    return dict(counts)
