"""``anomalyagent synthesize``: run the (trained) agent over a dataset's normal images for
every target category and defect type, and write the layout the benchmarks read::

    OUT/<category>/<defect>/image/NNN.png
    OUT/<category>/<defect>/mask/NNN.png
    OUT/trajectories/            (the episodes of every attempt, Parquet + PNG)
    OUT/samples/<task>.json      (which image was chosen and how, every attempt's gate verdict)
    OUT/summary.json             (delivered, undelivered by category/defect/source, gate reasons)

Only samples that pass the delivery gate (rollout/finalize.py) are written. An episode
whose sample fails is run again with a new seed, up to ``synthesize.max_attempts``; what
still fails is counted, never written as an anomaly. Samples are written as episodes
finish (image, then mask, each atomically), so a crash loses at most the episodes in
flight; a rerun skips every sample whose mask exists.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from cluster.config import AppConfig

RETRY_SEED_STRIDE = 7919  # attempt a of a task uses seed + a * stride: a new seed every time


def sample_paths(out: Path, category: str, defect: str, k: int) -> tuple[Path, Path]:
    folder = out / category / defect
    return folder / "image" / f"{k:03d}.png", folder / "mask" / f"{k:03d}.png"


def synthesis_tasks(ds, categories: Sequence[str], per_defect: int, seed: int, kb=None):
    """One task per (category, defect type of the dataset, k), cycling over train/good; each
    labelled with how its pair's knowledge was obtained (``kb.source_of``)."""
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
                tasks.append((k, Task(f"syn-{cat}-{defect}-{k:03d}", cat, defect, str(img), seed * 100003 + len(tasks),
                                      knowledge=kb.source_of(cat, defect) if kb is not None else "shipped")))
    return tasks


def sample_done(out: Path, category: str, defect: str, k: int) -> bool:
    """The sample is written and both its PNGs decode. A damaged one (a half-written file)
    is named, removed and made again."""
    from PIL import Image

    image, mask = sample_paths(out, category, defect, k)
    if not mask.exists():
        return False
    for p in (image, mask):
        try:
            with Image.open(p) as im:
                im.load()
        except (OSError, ValueError, SyntaxError) as e:
            print(f"synthesize: {p} is damaged ({type(e).__name__}); making this sample again")
            image.unlink(missing_ok=True)
            mask.unlink(missing_ok=True)
            return False
    return True


def attempt_task(task, attempt: int):
    """The task of attempt ``attempt`` (1-based): the same normal, a new seed and episode id."""
    if attempt == 1:
        return task
    return replace(task, task_id=f"{task.task_id}-r{attempt}", seed=task.seed + attempt * RETRY_SEED_STRIDE)


class SampleWriter:
    """The manager's ``on_episode`` callback: gate one episode's sample and write it if it
    passes; otherwise remember it for another attempt."""

    def __init__(self, out: Path, tools: Dict[str, Any], index_of: Dict[str, tuple], tool_chain: bool = False):
        self.out, self.tools, self.index_of, self.tool_chain = out, tools, index_of, tool_chain
        self.sources: Counter = Counter()
        self.attempts: Dict[str, List[Dict[str, Any]]] = {}  # base task id -> every attempt's verdict
        self.failed: List[str] = []  # base task ids whose latest attempt failed
        (out / "samples").mkdir(parents=True, exist_ok=True)

    def __call__(self, record: Dict[str, Any], extra: Dict[str, Any]) -> None:
        from rollout.finalize import deliver
        from rollout.atomic import atomic_png

        task = record["task"]
        base, k, normal_path = self.index_of[task["task_id"]]
        d = asyncio.run(deliver(record, self.tools, seed=int(task["seed"]), tool_chain=self.tool_chain))
        self.attempts.setdefault(base, []).append({
            "episode_id": record["episode_id"], "seed": task["seed"], "status": record["status"],
            "actions": record["actions"], "ig_calls": record["actions"].count("image_gen"),
            "generate_s": round(record["timings"]["generate_s"], 3), **d.summary()})
        if not d.passed:
            self.failed.append(base)
            return
        s = d.sample
        image_path, mask_path = sample_paths(self.out, task["category"], task["defect_type"], k)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_png(s.image, image_path)
        atomic_png(s.mask, mask_path)  # written last: its presence marks the sample done
        meta = {"task_id": base, "episode_id": record["episode_id"], "source": s.source, "image_index": s.image_index,
                "region_px": s.region_px, "status": record["status"], "actions": record["actions"],
                "normal": normal_path, "category": task["category"], "defect_type": task["defect_type"],
                "knowledge": task.get("knowledge", "shipped"),
                "image": str(image_path.relative_to(self.out)), "mask": str(mask_path.relative_to(self.out)),
                "qe": d.qe, "attempts": self.attempts[base]}
        (self.out / "samples" / f"{base}.json").write_text(json.dumps(meta, indent=1))
        (self.out / "samples" / f"{base}.undelivered.json").unlink(missing_ok=True)  # an earlier run's verdict
        self.sources[s.source] += 1


def run_synthesize(cfg: AppConfig, data: Optional[str], out: Path, categories: Optional[List[str]] = None,
                   engines: Optional[List[Any]] = None, label: str = "synthesize") -> Dict[str, Any]:
    """``engines`` replaces the generation engines (tests inject scripted ones, the agent
    benchmark its fixed pipelines). Every pair is checked against the knowledge before Ray
    starts (cluster/knowledge_check.py); the synthesized categories count as targets."""
    from cluster.assets import dataset_root, latest_policy
    from cluster.knowledge_check import prepare_knowledge
    from rollout.data import open_dataset

    cfg = copy.deepcopy(cfg)
    cfg.episode.temperature = cfg.synthesize.temperature  # delivery decodes at its own temperature (greedy)
    root = data or str(dataset_root(cfg))
    cats = categories or list(cfg.data.target_categories)
    ds = open_dataset(cfg.data.format, root, cats, cfg.data.visa_type_table)
    out.mkdir(parents=True, exist_ok=True)
    cfg, kb, fallbacks = prepare_knowledge(cfg, ds, ds.categories, ds.categories, out)

    from cluster.ray_session import cluster_session
    from cluster.runtime import start_runtime
    from rollout.store import TrajectoryStore

    policy, what = latest_policy(cfg, cfg.synthesize.policy)
    print(f"{label}: policy {policy} ({what}); {len(cats)} categories from {root} -> {out}")
    todo = [(k, t) for k, t in synthesis_tasks(ds, ds.categories, cfg.synthesize.per_defect, cfg.seed, kb)
            if not sample_done(out, t.category, t.defect_type, k)]
    total = sum(len(ds.defect_types(c)) for c in ds.categories) * cfg.synthesize.per_defect
    max_attempts = cfg.synthesize.max_attempts
    if (out / "trajectories").is_dir():  # stored before a crash, sample never written: run it again
        TrajectoryStore(out / "trajectories").remove(
            [attempt_task(t, a).task_id for _, t in todo for a in range(1, max_attempts + 1)])
    print(f"{label}: {total - len(todo)} of {total} samples already written, {len(todo)} to go "
          f"(up to {max_attempts} attempts each)")
    result: Dict[str, Any] = {"out": str(out), "policy": policy, "policy_kind": what, "samples": total,
                              "new": len(todo), "sources": {},
                              "knowledge_fallbacks": {f"{f.category}/{f.defect}": f.source for f in fallbacks}}
    if todo:
        t0 = time.perf_counter()
        with cluster_session(cfg):
            rt = start_runtime(cfg, policy, out / "trajectories", engines=engines)
            index_of = {attempt_task(t, a).task_id: (t.task_id, k, t.image_path)
                        for k, t in todo for a in range(1, max_attempts + 1)}
            writer = SampleWriter(out, rt.tools, index_of, cfg.synthesize.tool_chain_fallback)
            rt.manager.on_episode.append(writer)
            pending, lost, retried = [t for _, t in todo], 0, 0
            try:
                for attempt in range(1, max_attempts + 1):
                    if not pending:
                        break
                    writer.failed = []
                    specs = rt.manager.specs([attempt_task(t, attempt) for t in pending], group_size=1)
                    for s in specs:  # one episode per attempt: its id is the attempt's task id
                        s.episode_id = s.task.task_id
                    report = rt.manager.run(specs, keep_records=False)
                    lost, retried = lost + report.lost, retried + report.retried
                    again = set(writer.failed)
                    pending = [t for t in pending if t.task_id in again]
            finally:
                rt.shutdown()
        for t in pending:  # undelivered after every attempt: the verdicts are kept, no image
            (out / "samples" / f"{t.task_id}.undelivered.json").write_text(json.dumps(
                {"task_id": t.task_id, "category": t.category, "defect_type": t.defect_type, "normal": t.image_path,
                 "knowledge": t.knowledge, "attempts": writer.attempts.get(t.task_id, [])}, indent=1))
        result.update(sources=dict(writer.sources), lost=lost, retried=retried,
                      wall_s=round(time.perf_counter() - t0, 1))
    summary = summarize(out)
    result.update(summary)
    result["all_sources"] = summary["by_source"]
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    und = summary["undelivered"]
    print(f"{label}: {summary['delivered']} of {total} delivered; first-attempt yield {summary['first_attempt_yield']:.3f}; "
          f"undelivered {sum(und.values())}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(und.items()))})" if und else ""))
    return result


def summarize(out: Path) -> Dict[str, Any]:
    """Counts over every sample file: delivered by source, undelivered by
    category/defect/source of the last attempt, gate reasons over all attempts, the
    first-attempt yield, attempts and IG calls per delivered sample, and samples (delivered or
    not) by how their knowledge was obtained."""
    delivered, undelivered, reasons, knowledge = Counter(), Counter(), Counter(), Counter()
    firsts, attempts, ig_calls = [], 0, 0
    folder = out / "samples"
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        meta = json.loads(p.read_text())
        tries = meta.get("attempts", [])
        for a in tries:
            if a.get("reason"):
                reasons[a["reason"]] += 1
        if tries:
            firsts.append(bool(tries[0]["passed"]))
        knowledge[meta.get("knowledge", "shipped")] += 1
        if p.name.endswith(".undelivered.json"):
            last = tries[-1]["source"] if tries else "none"
            undelivered[f"{meta['category']}/{meta['defect_type']}/{last}"] += 1
            continue
        delivered[meta["source"]] += 1
        attempts += len(tries)
        ig_calls += sum(a.get("ig_calls", 0) for a in tries)
    n = sum(delivered.values())
    return {"delivered": n, "by_source": dict(delivered), "undelivered": dict(undelivered), "by_knowledge": dict(knowledge),
            "gate_reasons": dict(reasons), "first_attempt_yield": (sum(firsts) / len(firsts)) if firsts else 0.0,
            "attempts_per_delivered": attempts / n if n else None, "ig_calls_per_delivered": ig_calls / n if n else None}
