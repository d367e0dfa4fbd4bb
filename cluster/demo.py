"""The main job (``make demo``): runs what exists end to end on the embedded default and
writes a report folder. Each stage is resumable (see ``cluster.stages``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from cluster.config import AppConfig
from cluster.demo_rollout import run_rollout_stage
from cluster.demo_tools import run_tool_chain
from cluster.sft_cmd import build_and_train
from cluster.stages import StageRunner


def _stage_data(cfg: AppConfig) -> dict:
    from cluster.assets import dataset_root
    from rollout.data import open_dataset

    root = dataset_root(cfg)
    ds = open_dataset(cfg.data.format, root)
    return {"root": str(root), "categories": ds.categories,
            "images": {c: len(ds.train(c)) + len(ds.test(c)) for c in ds.categories}}


def _stage_splits(cfg: AppConfig, root: str, out: Path) -> dict:
    from rollout.data import open_dataset
    from rollout.data.splits import dataset_split, write_split_lists

    ds = open_dataset(cfg.data.format, root, cfg.data.target_categories)
    summary = {}
    for cat in ds.categories:
        split = dataset_split(ds, cat)
        write_split_lists(split, out / "splits")
        summary[cat] = {d: [len(s.centres), len(s.test)] for d, s in split.defects.items()}
    return summary


def _stage_models(cfg: AppConfig) -> dict:
    from cluster.assets import policy_path

    return {"policy": policy_path(cfg)}


def _stage_grpo(cfg: AppConfig, root: str, policy: str, out: Path) -> dict:
    """Stage 2: a few GRPO steps from the SFT checkpoint; the reward curve goes to the report folder."""
    import copy
    import shutil

    from cluster.ray_session import cluster_session
    from policy.checkpoint import CheckpointManager
    from policy.rl_loop import train_rl

    cfg = copy.deepcopy(cfg)
    cfg.rl.steps = cfg.demo.rl_steps
    cfg.rl.save_every = cfg.demo.rl_steps
    with cluster_session(cfg):
        res = train_rl(cfg, policy, root, out)
    shutil.copy(out / "reward_curve.png", out.parent / "reward_curve.png")
    latest = CheckpointManager(out / "checkpoints").latest()
    return {"checkpoint": str(latest / "model"), "steps": len(res["history"]),
            "reward_first5": round(res["reward_first5"], 4), "reward_last5": round(res["reward_last5"], 4),
            "reward_curve": str(out.parent / "reward_curve.png")}


def write_report(out: Path, runner: StageRunner) -> Path:
    lines = ["# AnomalyAgent demo report", "",
             "Tiny models on synthetic data: this shows the pipeline runs, not the paper's numbers.", "",
             "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {rec['seconds']:.1f} |" for name, rec in runner.done.items()]
    lines += ["", "## Stage results", ""]
    for name, rec in runner.done.items():
        lines += [f"### {name}", "", "```", str(rec["result"]), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def run_demo(cfg: AppConfig, out: Optional[Path] = None) -> int:
    out = out or Path("runs/demo")
    runner = StageRunner(out)
    data = runner.run("data", lambda: _stage_data(cfg))
    runner.run("splits", lambda: _stage_splits(cfg, data["root"], out))
    models = runner.run("models", lambda: _stage_models(cfg))
    runner.run("tool_chain", lambda: run_tool_chain(cfg, data["root"], out / "tools"))
    sft = runner.run("sft", lambda: build_and_train(cfg, data["root"], models["policy"], out / "sft"))
    grpo = runner.run("grpo", lambda: _stage_grpo(cfg, data["root"], sft["checkpoint"], out / "grpo"))
    runner.run("rollout", lambda: run_rollout_stage(cfg, data["root"], grpo["checkpoint"], out / "trajectories"))
    report = write_report(out, runner)
    print(f"demo finished: report at {report}")
    return 0
