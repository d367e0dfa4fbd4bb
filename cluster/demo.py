"""The main job (``make demo``): the whole product end to end on the embedded default —
data, tiny models, the tool chain, SFT (with the well-formed rate before/after), GRPO, a
rollout of the trained agent, and the quick agent ablation (the trained agent, the SFT
agent and the fixed pipelines synthesizing the target categories through the delivery
gate, each with the quick MVTec benchmark) — into a report folder. Each stage is
resumable (``cluster.stages``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from cluster.config import AppConfig
from cluster.demo_report import write_report
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
    from cluster.rl_loop import train_rl

    cfg = copy.deepcopy(cfg)
    cfg.rl.steps = cfg.demo.rl_steps
    cfg.rl.tasks_per_step = min(cfg.rl.tasks_per_step, cfg.demo.rl_tasks_per_step)
    cfg.rl.save_every = cfg.demo.rl_steps
    with cluster_session(cfg):
        res = train_rl(cfg, policy, root, out)
    shutil.copy(out / "reward_curve.png", out.parent / "reward_curve.png")
    latest = CheckpointManager(out / "checkpoints").latest()
    return {"checkpoint": str(latest / "model"), "steps": len(res["history"]),
            "reward_first5": round(res["reward_first5"], 4), "reward_last5": round(res["reward_last5"], 4),
            "reward_curve": str(out.parent / "reward_curve.png")}


def _demo_sft_config(cfg: AppConfig, steps: int) -> AppConfig:
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.sft.steps = min(cfg.sft.steps, steps)
    cfg.sft.word_swap_fraction = cfg.demo.sft_word_swap_fraction
    return cfg


def _stage_well_formed(cfg: AppConfig, root: str, base: str, trained: str) -> dict:
    """Well-formed episode rate of the untrained and the SFT policy on the same fresh target tasks."""
    import copy

    from cluster.ray_session import cluster_session
    from cluster.sft_cmd import sampled_rate, well_formed_rate

    cfg = copy.deepcopy(cfg)
    cfg.sft.eval_tasks = cfg.demo.eval_tasks
    with cluster_session(cfg):
        before = well_formed_rate(cfg, root, base, None, "before-")
        after = well_formed_rate(cfg, root, trained, None, "after-")
        sampled = sampled_rate(cfg, root, trained)
    return {"tasks": cfg.demo.eval_tasks, "temperature": cfg.sft.eval_temperature, "before": round(before, 4),
            "after": round(after, 4), "sampled_temperature": cfg.sft.eval_sampled_temperature,
            "after_sampled": None if sampled is None else round(sampled, 4)}


def _stage_ablation(cfg: AppConfig, root: str, sft: str, grpo: str, out: Path) -> dict:
    """The quick agent ablation (cluster/agent_bench.py) with the demo's own checkpoints; the
    trained agent's row is the demo's synthesis."""
    import shutil

    from cluster.agent_bench import last_line, run_agent_bench
    from cluster.demo_report import samples_figure

    report = run_agent_bench(cfg, out, quick=True, data=root, per_defect=cfg.demo.per_defect,
                             policies={"sft": sft, "grpo": grpo}, bench_epochs=cfg.demo.bench_epochs)
    shutil.copy(out / "ablation.png", out.parent / "ablation.png")
    samples_figure(out / "rows" / "grpo", out.parent)
    print(last_line(report))
    return {"rows": report["rows"], "k": report["k"], "last_line": last_line(report)}


def run_demo(cfg: AppConfig, out: Optional[Path] = None) -> int:
    out = out or Path("runs/demo")
    runner = StageRunner(out)
    data = runner.run("data", lambda: _stage_data(cfg))
    runner.run("splits", lambda: _stage_splits(cfg, data["root"], out))
    models = runner.run("models", lambda: _stage_models(cfg))
    runner.run("tool_chain", lambda: run_tool_chain(cfg, data["root"], out / "tools"))
    sft = runner.run("sft", lambda: build_and_train(_demo_sft_config(cfg, cfg.demo.sft_steps), data["root"],
                                                    models["policy"], out / "sft"))
    runner.run("well_formed", lambda: _stage_well_formed(cfg, data["root"], models["policy"], sft["checkpoint"]))
    grpo = runner.run("grpo", lambda: _stage_grpo(cfg, data["root"], sft["checkpoint"], out / "grpo"))
    runner.run("rollout", lambda: run_rollout_stage(cfg, data["root"], grpo["checkpoint"], out / "trajectories"))
    runner.run("ablation", lambda: _stage_ablation(cfg, data["root"], sft["checkpoint"], grpo["checkpoint"],
                                                   out / "ablation"))
    report = write_report(out, runner)
    print(f"demo finished: report at {report}")
    return 0
