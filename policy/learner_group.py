"""The learner as a Ray worker group with torch.distributed (gloo on CPU; NCCL on GPU), so
the same code spans nodes. Rank 0 binds the rendezvous port. Ranks hold full replicas or
FSDP shards (``learner.sharding``); gathering weights or a checkpoint is then a collective,
so the group calls every rank and rank 0 writes."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import ray
from verl import DataProto

from policy.config import LearnerConfig
from policy.learner import PolicyLearner


class LearnerWorker:
    def __init__(self, model_path: str, cfg: LearnerConfig, group_size: int, rank: int, world_size: int, address: str):
        import torch
        import torch.distributed as tdist

        torch.manual_seed(0)
        if world_size > 1:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            tdist.init_process_group(backend, init_method=f"tcp://{address}", rank=rank, world_size=world_size)
        self.rank, self.world_size = rank, world_size
        self.learner = PolicyLearner(model_path, cfg, group_size, world_size=world_size)

    def step(self, shard: DataProto, global_tokens: int, version: int = 0) -> Dict[str, float]:
        from policy.faults import fault_point

        fault_point("learner_step", version)  # reliability suite: a crash mid-update
        return self.learner.step(shard, global_tokens)

    def parameter_counts(self) -> Dict[str, int]:
        return self.learner.parameter_counts()

    def state_dict(self, every_rank: bool = False):
        """Rank 0's full weights; other ranks ``{}`` unless ``every_rank`` (replicated: a check)."""
        if self.rank != 0 and not every_rank and not self.learner.sharded:
            return {}
        return self.learner.state_dict()

    def save_checkpoint(self, root: str, step: int, keep_last: int, state: Dict[str, Any]) -> Optional[str]:
        """Rank 0 writes; sharded, every rank joins the gathers (collectives)."""
        from policy.checkpoint import CheckpointManager
        from policy.sharding import gather_model_state, gather_optimizer_state

        lr, sharded = self.learner, self.learner.sharded
        if self.rank != 0 and not sharded:  # a replica has nothing rank 0 lacks
            return None
        model_state = gather_model_state(lr.model, sharded)
        optimizer_state = gather_optimizer_state(lr.trained, lr.opt, sharded)
        state = {**state, "sharding": lr.cfg.sharding if sharded else "replicated"}
        if lr.value_head is not None:  # the critic travels in the trainer state
            state["value_head"] = gather_model_state(lr.value_head, sharded)
        if self.rank != 0:
            return None
        return str(CheckpointManager(root, keep_last).save(step, lr.model, tokenizer=lr.tokenizer, state=state,
                                                           model_state=model_state, optimizer_state=optimizer_state))

    def load_checkpoint(self, path: str) -> Dict[str, Any]:
        """Every rank reads the full checkpoint and keeps its part."""
        from policy.checkpoint import CheckpointManager, set_rng_state
        from policy.sharding import load_model_state, load_optimizer_state

        lr, sharded = self.learner, self.learner.sharded
        model_state, blob = CheckpointManager.read(path)
        state = dict(blob["state"])
        saved_as, wanted = state.pop("sharding", "replicated"), "fsdp" if sharded else "replicated"
        if saved_as != wanted:
            raise ValueError(f"{path} holds a {saved_as} learner's optimizer state; this run has learner.sharding="
                             f"{lr.cfg.sharding} with world_size={self.world_size}: resume with the same layout")
        load_model_state(lr.model, model_state, sharded)
        load_optimizer_state(lr.trained, lr.opt, blob["optimizer"], sharded)
        head = state.pop("value_head", None)
        if lr.value_head is not None:
            load_model_state(lr.value_head, head, sharded)
        set_rng_state(blob["rng"])
        return {"step": blob["step"], **state}


def _free_address() -> str:
    """``ip:port`` of a free port on the node this runs on (rank 0's bundle: the rendezvous)."""
    import socket

    ip = ray.util.get_node_ip_address()
    with socket.socket() as s:
        s.bind((ip, 0))
        return f"{ip}:{s.getsockname()[1]}"


def learner_bundles(cfg: LearnerConfig) -> List[Dict[str, float]]:
    """One placement-group bundle per rank (zero amounts left out, as Ray wants)."""
    bundle = {"CPU": cfg.num_cpus_per_worker, "GPU": cfg.num_gpus_per_worker}
    return [{k: v for k, v in bundle.items() if v > 0} for _ in range(cfg.world_size)]


def wait_for_placement(pg, cfg: LearnerConfig, timeout_s: float, say_every_s: float = 30.0) -> None:
    """Wait for every rank's bundle, saying so while we wait (a node was lost, or the cluster
    is too small): all ranks start or none does, so the learner never runs short of ranks.
    Past ``timeout_s`` the group is given up with a message, and its bundles released."""
    import time

    from ray.util.placement_group import remove_placement_group

    start, ready = time.monotonic(), pg.ready()
    while True:
        left = timeout_s - (time.monotonic() - start)
        done, _ = ray.wait([ready], timeout=max(0.0, min(say_every_s, left)))
        if done:
            return
        want = f"{cfg.world_size} learner ranks of {learner_bundles(cfg)[0]} ({cfg.placement_strategy})"
        free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
        if time.monotonic() - start >= timeout_s:
            remove_placement_group(pg)
            raise TimeoutError(f"learner: no room for {want} within {timeout_s:g}s; the cluster has {free} free. "
                               "Add a node, or lower learner.world_size / learner.num_cpus_per_worker")
        print(f"learner: waiting for room for {want}; the cluster has {free} free", flush=True)


class LearnerGroup:
    """``world_size`` ranks in one placement group (``placement_strategy``), so the ranks
    are gang-scheduled: all start or none does."""

    def __init__(self, model_path: str, cfg: LearnerConfig, group_size: int, ready_timeout_s: float = 300.0,
                 env: Optional[Dict[str, str]] = None):
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.pg = placement_group(learner_bundles(cfg), strategy=cfg.placement_strategy)
        wait_for_placement(self.pg, cfg, ready_timeout_s)
        strategy = lambda r: PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=r)  # noqa: E731
        address = ray.get(ray.remote(_free_address).options(num_cpus=0, scheduling_strategy=strategy(0)).remote())
        self.workers = [
            ray.remote(LearnerWorker).options(
                num_cpus=cfg.num_cpus_per_worker, num_gpus=cfg.num_gpus_per_worker, max_concurrency=2,
                runtime_env={"env_vars": dict(env)} if env else None,
                scheduling_strategy=strategy(r),
            ).remote(model_path, cfg, group_size, r, cfg.world_size, address)
            for r in range(cfg.world_size)]
        self.world_size = cfg.world_size

    def step(self, batch: DataProto, version: int = 0) -> Dict[str, float]:
        """Shard the batch over the ranks (uneven shards are fine: the loss uses global token counts)."""
        global_tokens = int(batch.batch["response_mask"].sum())
        parts = np.array_split(np.arange(len(batch)), self.world_size)
        shards = [batch.select_idxs(idx) for idx in parts]
        metrics = ray.get([w.step.remote(s, global_tokens, version) for w, s in zip(self.workers, shards)])
        return metrics[0]

    def save_checkpoint(self, root: str, step: int, keep_last: int, state: Dict[str, Any]) -> str:
        return ray.get([w.save_checkpoint.remote(root, step, keep_last, state) for w in self.workers])[0]

    def load_checkpoint(self, path: str) -> Dict[str, Any]:
        return ray.get([w.load_checkpoint.remote(path) for w in self.workers])[0]

    def state_dict(self) -> Dict[str, Any]:
        """Full weights from rank 0 (every rank is called: gathering shards is a collective)."""
        return ray.get([w.state_dict.remote() for w in self.workers])[0]

    def state_dicts(self) -> List[Dict[str, Any]]:
        """Each rank's own full copy (replicated learners; sharded ones gather to rank 0)."""
        return ray.get([w.state_dict.remote(every_rank=True) for w in self.workers])

    def parameter_counts(self) -> List[Dict[str, int]]:
        return ray.get([w.parameter_counts.remote() for w in self.workers])

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for w in self.workers:
            ray.kill(w)
        remove_placement_group(self.pg)
