"""What a configuration asks of the cluster, checked against what the cluster has before
any actor starts — so a GPU preset on a CPU box fails in a second with a message, instead
of hanging on actors Ray can never place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping

from cluster.config import AppConfig

TOOL_NAMES = ("prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen")


class ResourceError(RuntimeError):
    """The preset asks for more than the cluster has; the message lists who asks for what."""


@dataclass(frozen=True)
class Demand:
    name: str
    replicas: int
    num_cpus: float
    num_gpus: float

    @property
    def cpus(self) -> float:
        return self.replicas * self.num_cpus

    @property
    def gpus(self) -> float:
        return self.replicas * self.num_gpus


def resource_plan(cfg: AppConfig, learner: bool = False) -> List[Demand]:
    """The actors a run starts: tools, generation engines, rollout workers (and learner ranks)."""
    plan = [Demand(f"tools.{n}", r.replicas, r.num_cpus, r.num_gpus)
            for n in TOOL_NAMES for r in [getattr(cfg.tools, n).resources]]
    e = cfg.policy.engine
    plan.append(Demand("policy.engine", e.replicas, e.num_cpus, e.num_gpus))
    plan.append(Demand("rollout.workers", cfg.rollout.num_workers, cfg.rollout.worker_num_cpus, 0.0))
    if learner:
        lc = cfg.learner
        plan.append(Demand("learner", lc.world_size, lc.num_cpus_per_worker, lc.num_gpus_per_worker))
    return plan


def check_fits(plan: List[Demand], available: Mapping[str, float]) -> None:
    """Raise ``ResourceError`` when the plan needs more GPUs or CPUs than ``available``
    (``ray.cluster_resources()``), or a single replica wants more than one GPU's fraction
    in a way Ray cannot place."""
    problems = [f"{d.name}: num_gpus={d.num_gpus:g} per replica must be a fraction <= 1 or a whole number"
                for d in plan if d.num_gpus > 1 and d.num_gpus != int(d.num_gpus)]
    for key, attr in (("GPU", "gpus"), ("CPU", "cpus")):
        need = sum(getattr(d, attr) for d in plan)
        have = float(available.get(key, 0.0))
        if need > have + 1e-9:
            who = ", ".join(f"{d.name} {getattr(d, attr):g} ({d.replicas}x{getattr(d, 'num_' + attr):g})"
                            for d in plan if getattr(d, attr) > 0)
            problems.append(f"the preset asks for {need:g} {key}s but the cluster has {have:g}: {who}")
    if problems:
        raise ResourceError("; ".join(problems))


def check_cluster(cfg: AppConfig, learner: bool = False) -> Dict[str, float]:
    """Check the plan against the running Ray cluster; returns what the cluster has."""
    import ray

    available = ray.cluster_resources()
    check_fits(resource_plan(cfg, learner), available)
    return available
