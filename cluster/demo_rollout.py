"""Demo stage: target tasks × G episodes of the policy through the rollout manager, stored
as Parquet + PNG; summarises how well-formed the episodes are."""
from __future__ import annotations

from pathlib import Path

from cluster.config import AppConfig


def well_formed(record) -> bool:
    """Every turn parsed and dispatched, and the episode ended with a valid answer."""
    return record["status"] == "answer" and all(record["format_ok"]) and not any(
        a.startswith("error:") for a in record["actions"])


def run_rollout_stage(cfg: AppConfig, root: str, policy: str, out: Path, tasks_per_category: int = 1) -> dict:
    from cluster.ray_session import cluster_session
    from cluster.runtime import start_runtime
    from rollout.data import open_dataset
    from rollout.tasks import make_tasks

    ds = open_dataset(cfg.data.format, root, cfg.data.target_categories)
    tasks = make_tasks(ds, ds.categories, per_defect=tasks_per_category, seed=cfg.seed)
    with cluster_session(cfg):
        rt = start_runtime(cfg, policy, out)
        try:
            report = rt.manager.run(rt.manager.specs(tasks, prefix="demo-"))
        finally:
            rt.shutdown()
    statuses = {}
    for r in report.records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"policy": policy, "episodes": report.episodes, "stored": report.stored, "lost": report.lost,
            "retried": report.retried, "wall_s": round(report.wall_s, 1), "statuses": statuses,
            "well_formed": sum(well_formed(r) for r in report.records), "store": str(out)}
