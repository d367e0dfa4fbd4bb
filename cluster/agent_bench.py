"""``anomalyagent bench agent``: the paper's ablation in miniature, in one run, on the same
normals, through the same tools, the same delivery gate and the same benchmarks.

Rows: the fixed prompt (the paper's "image model with a fixed prompt"), PG one shot,
best-of-K (K = the trained agent's IG calls per delivered sample), the agent after SFT,
the agent after SFT + GRPO. Columns, on the gated output: first-attempt yield, attempts
and IG calls per delivered sample, the judge's type accuracy on what was delivered, empty
or invisible samples before the gate, wall time per delivered sample, and the quick MVTec
columns (IC-LPIPS, classification accuracy, pixel AP, image AUROC) against the target
categories' real test anomalies.

The checkpoints come from ``--runs DIR`` (``sft/`` and ``grpo/`` as ``anomalyagent train``
and ``make demo`` write them) or are trained there first: the default recipe, or with
``--quick`` the demo's sizes.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from cluster.config import AppConfig

ROWS = (("fixed", "fixed prompt, one shot"), ("pg", "PG one shot"), ("best_of_k", "best-of-K"),
        ("sft", "agent (SFT)"), ("grpo", "agent (SFT + GRPO)"))
QUICK_PER_DEFECT = 4


def quick_recipe(cfg: AppConfig) -> AppConfig:
    """The demo's training sizes (make demo's SFT and GRPO)."""
    cfg = copy.deepcopy(cfg)
    cfg.sft.steps = min(cfg.sft.steps, cfg.demo.sft_steps)
    cfg.sft.word_swap_fraction = cfg.demo.sft_word_swap_fraction
    cfg.rl.steps = cfg.demo.rl_steps
    cfg.rl.tasks_per_step = min(cfg.rl.tasks_per_step, cfg.demo.rl_tasks_per_step)
    cfg.rl.save_every = cfg.demo.rl_steps
    return cfg


def checkpoints(cfg: AppConfig, root: str, runs: Path) -> Dict[str, str]:
    """The SFT and GRPO checkpoints under ``runs``, training whichever is missing."""
    from cluster.assets import policy_path
    from cluster.ray_session import cluster_session
    from cluster.train_cmd import sft_checkpoint
    from policy.checkpoint import CheckpointManager
    from cluster.rl_loop import train_rl

    sft = sft_checkpoint(cfg, root, policy_path(cfg), runs / "sft")
    latest = CheckpointManager(runs / "grpo" / "checkpoints").latest()
    if latest is None or not (latest / "model").is_dir():
        print(f"bench agent: no GRPO checkpoint in {runs / 'grpo'}: training {cfg.rl.steps} steps from {sft}")
        with cluster_session(cfg, learner=True):
            train_rl(cfg, sft, root, runs / "grpo")
        latest = CheckpointManager(runs / "grpo" / "checkpoints").latest()
    return {"sft": sft, "grpo": str(latest / "model")}


def type_fidelity(generated: Path, qe_tool) -> Dict[str, Any]:
    """The judge's type accuracy on the delivered samples: each is judged as every type of
    its category, and the requested type must score strictly highest."""
    from PIL import Image

    from benchmarks.judge import judge_as_each_type, winner
    from rollout.data.images import read_rgb

    hits = []
    for p in sorted((generated / "samples").glob("*.json")):
        if p.name.endswith(".undelivered.json"):
            continue
        meta = json.loads(p.read_text())
        normal = read_rgb(meta["normal"])
        image = np.asarray(Image.open(generated / meta["image"]).convert("RGB"))
        scores = judge_as_each_type(qe_tool, normal, image, meta["category"], qe_tool.kb.defects(meta["category"]),
                                    meta.get("region_px"))
        hits.append(winner(scores) == meta["defect_type"])
    return {"type_fidelity": float(np.mean(hits)) if hits else float("nan"), "judged": len(hits)}


def empty_delivered(generated: Path) -> int:
    """Delivered samples whose mask is empty (the gate makes this 0; counted, not assumed)."""
    from PIL import Image

    masks = [p for p in generated.glob("*/*/mask/*.png")]
    return sum(1 for p in masks if not (np.asarray(Image.open(p)) > 0).any())


def row_metrics(generated: Path, summary: Dict[str, Any], qe_tool) -> Dict[str, Any]:
    n = summary["delivered"]
    reasons = summary["gate_reasons"]
    empty = sum(reasons.get(r, 0) for r in ("nothing_generated", "no_change", "empty_mask"))
    wall = summary.get("wall_s")
    return {"samples": summary["samples"], "delivered": n, "first_attempt_yield": summary["first_attempt_yield"],
            "attempts_per_delivered": summary["attempts_per_delivered"],
            "ig_calls_per_delivered": summary["ig_calls_per_delivered"], "empty_or_invisible_before_gate": empty,
            "gate_reasons": reasons, "undelivered": sum(summary["undelivered"].values()),
            "wall_s_per_delivered": (wall / n) if (wall is not None and n) else None,
            "sources": summary["by_source"], "empty_delivered": empty_delivered(generated),
            **type_fidelity(generated, qe_tool)}


def _mvtec_columns(generated: Path, root: str, out: Path, cfg: AppConfig, epochs: Optional[int]) -> Dict[str, Any]:
    from benchmarks.mvtec import run_mvtec_bench

    try:
        res = run_mvtec_bench(str(generated), root, out, list(cfg.data.target_categories), epochs, True, cfg.bench,
                              cfg.data.format, allow_missing_types=True)
    except Exception as e:  # noqa: BLE001 - e.g. a row that delivered no sample of a category
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    m = res["summary"]["mean"]
    return {k: m.get(k) for k in ("ic_lpips", "ic_lpips_dropped", "cls_accuracy", "pixel_ap", "image_auroc", "is")}


def run_agent_bench(cfg: AppConfig, out: Path, runs: Optional[Path] = None, quick: bool = False,
                    data: Optional[str] = None, per_defect: Optional[int] = None,
                    policies: Optional[Dict[str, str]] = None, bench_epochs: Optional[int] = None,
                    mvtec_rows: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """``policies`` ({"sft": path, "grpo": path}) skips the checkpoint look-up (the demo
    passes its own); ``mvtec_rows`` limits the MVTec columns (a classifier and a detector
    trained per row, the bulk of the time at quick sizes) to those rows."""
    import ray

    from actors.registry import build_tool
    from benchmarks.agent_table import write_tables
    from benchmarks.baselines import PipelineEngine
    from cluster.assets import dataset_root, policy_path
    from cluster.ray_session import cluster_session
    from cluster.synthesize_cmd import run_synthesize

    base_cfg = quick_recipe(cfg) if quick else copy.deepcopy(cfg)
    root = data or str(dataset_root(base_cfg))
    runs = runs or Path(cfg.out_dir)
    policies = policies or checkpoints(base_cfg, root, runs)
    row_cfg = copy.deepcopy(base_cfg)
    row_cfg.synthesize.per_defect = per_defect or (QUICK_PER_DEFECT if quick else cfg.synthesize.per_defect)
    qe = build_tool("quality_eval", cfg.tools)
    results: Dict[str, Dict[str, Any]] = {}
    k = None
    order = ["sft", "grpo", "fixed", "pg", "best_of_k"]  # best-of-K needs the agent's IG calls
    with cluster_session(row_cfg):
        for name in order:
            c = copy.deepcopy(row_cfg)
            engines = None
            if name in policies:
                c.synthesize.policy = policies[name]
            else:
                c.synthesize.policy = policy_path(c)
                if name == "best_of_k":
                    ig = results["grpo"]["ig_calls_per_delivered"] or 1.0
                    k = int(min(max(1, math.floor(ig + 0.5)), (c.episode.max_turns - 3) // 2))
                    if k == 1:  # one candidate: the same episodes as PG one shot (plus a QE call)
                        results[name] = {**results["pg"], "same_as": "pg"}
                        continue
                engines = [ray.remote(PipelineEngine).options(num_cpus=0.1, max_concurrency=1000).remote(
                    c.synthesize.policy, name, k or 1)]
            gen = out / "rows" / name
            summary = run_synthesize(c, root, gen, engines=engines, label=f"bench agent [{name}]")
            results[name] = row_metrics(gen, summary, qe)
            if mvtec_rows is None or name in mvtec_rows:
                t0 = time.perf_counter()
                results[name]["mvtec"] = _mvtec_columns(gen, root, out / "mvtec" / name, c, bench_epochs)
                results[name]["mvtec_s"] = round(time.perf_counter() - t0, 1)
            else:
                results[name]["mvtec"] = {}
    report = {"rows": {n: results[n] for n, _ in ROWS}, "labels": dict(ROWS), "k": k, "policies": policies,
              "quick": quick, "per_defect": row_cfg.synthesize.per_defect,
              "categories": list(cfg.data.target_categories)}
    write_tables(report, out)
    return report


def last_line(report: Dict[str, Any]) -> str:
    rows = report["rows"]

    def m(name, key):
        v = rows[name]["mvtec"].get(key)
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    return (f"fixed_cls={m('fixed', 'cls_accuracy')} agent_cls={m('grpo', 'cls_accuracy')} "
            f"fixed_pap={m('fixed', 'pixel_ap')} agent_pap={m('grpo', 'pixel_ap')} "
            f"agent_yield={rows['grpo']['first_attempt_yield']:.3f} bestofk_yield={rows['best_of_k']['first_attempt_yield']:.3f} "
            f"agent_type_fidelity={rows['grpo']['type_fidelity']:.3f} "
            f"empty_delivered={sum(r.get('empty_delivered', 0) for r in rows.values())}")
