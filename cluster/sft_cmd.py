"""``anomalyagent sft``: build trajectories from the source categories, train, and measure the
well-formed episode rate of the policy before and after on fresh target tasks, through the
real rollout manager."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

from cluster.config import AppConfig


def build_sft_data(cfg: AppConfig, root: str, policy: str, out: Path) -> Dict:
    from transformers import AutoTokenizer

    from actors.registry import build_tool
    from policy.sft_data import GoodImageNormals, SyntheticNormals, TrajectoryBuilder, write_sft_dataset
    from rollout.data import open_dataset
    from rollout.format import TOOL_NAMES

    ds = open_dataset(cfg.data.format, root, cfg.data.source_categories, cfg.data.visa_type_table)
    normals = SyntheticNormals(root) if (Path(root) / "dataset.json").is_file() else GoodImageNormals(ds)
    builder = TrajectoryBuilder({n: build_tool(n, cfg.tools) for n in TOOL_NAMES}, normals, cfg.seed)
    trajs = [t for cat in ds.categories for s in ds.anomalies(cat) for v in range(cfg.sft.variants_per_anomaly)
             if (t := builder.build(s, v)) is not None]
    return write_sft_dataset(trajs, AutoTokenizer.from_pretrained(policy), out)


def well_formed_rate(cfg: AppConfig, root: str, policy: str, store: Optional[Path], prefix: str) -> float:
    import copy

    from cluster.demo_rollout import well_formed
    from cluster.runtime import start_runtime
    from rollout.data import open_dataset
    from rollout.tasks import make_tasks

    cfg = copy.deepcopy(cfg)
    cfg.episode.temperature = cfg.sft.eval_temperature
    ds = open_dataset(cfg.data.format, root, cfg.data.target_categories)
    n_types = sum(len(ds.defect_types(c)) for c in ds.categories)
    tasks = make_tasks(ds, ds.categories, per_defect=math.ceil(cfg.sft.eval_tasks / max(1, n_types)),
                       seed=cfg.seed + 7)[: cfg.sft.eval_tasks]
    rt = start_runtime(cfg, policy, store)
    try:
        report = rt.manager.run(rt.manager.specs(tasks, group_size=1, prefix=prefix))
    finally:
        rt.shutdown()
    return sum(well_formed(r) for r in report.records) / max(1, len(report.records))


def run_sft(cfg: AppConfig, out: Path) -> Dict:
    from cluster.assets import dataset_root, policy_path
    from cluster.ray_session import ray_session
    from cluster.stages import StageRunner

    root, base = str(dataset_root(cfg)), policy_path(cfg)
    runner = StageRunner(out)
    summary = runner.run("sft_data", lambda: build_sft_data(cfg, root, base, out / "sft_data"))
    print(f"trajectories: {summary['trajectories']}, N distribution {summary['n_generations']}")
    trained = runner.run("sft_train", lambda: _train(cfg, base, out))
    with ray_session(cfg.ray):
        before = runner.run("well_formed_before", lambda: {"rate": well_formed_rate(cfg, root, base, None, "before-")})
        after = runner.run("well_formed_after", lambda: {"rate": well_formed_rate(cfg, root, trained["checkpoint"], None, "after-")})
    return {"checkpoint": trained["checkpoint"], "before": before["rate"], "after": after["rate"], **trained}


def _train(cfg: AppConfig, base: str, out: Path) -> Dict:
    from policy.sft import train_sft

    r = train_sft(base, out / "sft_data" / "sft.parquet", out / "sft", cfg.sft, cfg.seed)
    return {"checkpoint": str(r.checkpoint), "first_loss": r.first_loss, "last_loss": r.last_loss,
            "train_s": round(r.seconds, 1)}
