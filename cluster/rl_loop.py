"""Stage 2, the RL loop: rollout manager → reward actor → learner group → engines, K steps.

Each step samples ``tasks_per_step`` source tasks (a pure function of seed and step, so a
resumed run sees the same tasks), runs G episodes per task, scores them as they stream out,
trains one GRPO step, and pushes the new weights to every engine. TensorBoard scalars per
step; a reward-curve PNG at the end; checkpoints every ``save_every`` steps.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from cluster.config import AppConfig


def _step_tasks(tasks, n: int, seed: int, step: int):
    rng = np.random.default_rng([seed, step])
    return [tasks[i] for i in rng.choice(len(tasks), size=min(n, len(tasks)), replace=False)]


def _episode_rewards(records: List[Dict[str, Any]], scores: Dict[str, Dict[str, float]], cfg: AppConfig) -> List[float]:
    from rewards.reward import RewardParts, group_rewards

    by_group: Dict[str, List[int]] = {}
    for i, r in enumerate(records):
        by_group.setdefault(r["group"], []).append(i)
    out = [0.0] * len(records)
    for idx in by_group.values():
        parts = [RewardParts(**{k: scores[records[i]["episode_id"]][k] for k in ("task", "reflection", "behaviour", "total")})
                 for i in idx]
        for i, v in zip(idx, group_rewards(parts, cfg.reward)):
            out[i] = float(v)
    return out


def _reward_rows(records, scores, rewards, batch, step: int) -> List[Dict[str, Any]]:
    """What the episode viewer shows of a step: each episode's parts, its trained scalar and
    (GRPO) its advantage, the value at its first response token."""
    adv = batch.batch["advantages"] if "advantages" in batch.batch.keys() else None
    mask = batch.batch["response_mask"]
    rows = []
    for i, (r, reward) in enumerate(zip(records, rewards)):
        s = scores[r["episode_id"]]
        first = int(mask[i].nonzero()[0]) if adv is not None and bool(mask[i].any()) else None
        rows.append({"episode_id": r["episode_id"], "group": r["group"], "step": step + 1, "policy_version": step,
                     **{k: float(s[k]) for k in ("task", "reflection", "behaviour", "total")}, "reward": float(reward),
                     "advantage": float(adv[i, first]) if first is not None else float("nan")})
    return rows


def plot_reward_curve(history: List[Dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("reward", "-o"), ("task", "--"), ("reflection", ":"), ("behaviour", "-.")):
        ax.plot(steps, [h[key] for h in history], style, label=key, markersize=3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean over episodes")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _step_of(episode_id: str) -> int:
    """The 0-based step of an RL episode id (``s<step>-<task>-g<k>``)."""
    return int(episode_id[1:].split("-", 1)[0])


def train_rl(cfg: AppConfig, policy: str, root: str, out: Path, progress: bool = True,
             engines: Optional[List[Any]] = None, learner_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """``engines`` replaces the generation engines (tests inject scripted ones);
    ``learner_env`` goes to the learner processes (the reliability suite's fault points)."""
    import ray
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from cluster.resources import check_cluster
    from cluster.runtime import start_engines, start_runtime
    from policy.checkpoint import CheckpointManager
    from policy.learner import add_advantages, batch_from_episodes, drop_zero_advantage_groups
    from policy.learner_group import LearnerGroup
    from rewards.actor import RewardActor, RewardStream
    from rollout.data import open_dataset
    from rollout.store import TrajectoryStore
    from rollout.tasks import make_tasks
    from actors.knowledge_files import load_knowledge

    check_cluster(cfg, learner=True)  # fail before anything starts
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(cfg.data.format, root, cfg.data.source_categories, cfg.data.visa_type_table)
    tasks = make_tasks(ds, ds.categories, per_defect=4, seed=cfg.seed, kb=load_knowledge(tuple(cfg.tools.knowledge.extra)))
    ckpts = CheckpointManager(out / "checkpoints", cfg.rl.keep_last)
    source = None if cfg.rl.resume == "disable" else (ckpts.latest() if cfg.rl.resume == "auto" else Path(cfg.rl.resume))
    start_policy = str(source / "model") if source else policy
    engines = engines if engines is not None else start_engines(cfg, start_policy)
    reward_actor = ray.remote(RewardActor).options(num_cpus=0.1).remote(cfg.reward)
    store = TrajectoryStore(out / "trajectories")
    stream = RewardStream(reward_actor)
    rt = start_runtime(cfg, start_policy, None, on_episode=[stream, lambda rec, extra: store.write(rec, extra)],
                       engines=engines)
    learner = LearnerGroup(policy, cfg.learner, cfg.rollout.group_size, env=learner_env)
    tokenizer = AutoTokenizer.from_pretrained(policy)  # replays the turn grammars into the batch
    history: List[Dict[str, float]] = []
    start = 0
    if source:
        state = learner.load_checkpoint(str(source))
        start, history = state["step"], state.get("history", [])
    # episodes of steps that never finished (a crash after their rollout) are run again: drop them
    store.remove([e for e in store.ids() if _step_of(e) >= start])
    # scalars are logged at version = step + 1: a resume at `start` rewrites versions start+1 onwards
    writer = SummaryWriter(str(out / "tensorboard"), purge_step=start + 1 if start else None)
    bar = tqdm(range(start, cfg.rl.steps), desc="grpo", unit="step", initial=start, total=cfg.rl.steps, disable=not progress)
    try:
        for step in bar:
            t0 = time.perf_counter()
            specs = rt.manager.specs(_step_tasks(tasks, cfg.rl.tasks_per_step, cfg.seed, step), prefix=f"s{step}-")
            report = rt.manager.run(specs, progress=False)
            t_roll = time.perf_counter() - t0
            scores = stream.results()
            t_reward = time.perf_counter() - t0 - t_roll
            records = sorted(report.records, key=lambda r: r["episode_id"])
            rewards = _episode_rewards(records, scores, cfg)
            batch = batch_from_episodes(records, rewards, pad_id=0, tokenizer=tokenizer)
            if cfg.learner.estimator == "grpo":  # GAE advantages come from the learner's value head
                batch = add_advantages(batch)
            store.write_rewards(step + 1, _reward_rows(records, scores, rewards, batch, step))
            if cfg.learner.estimator == "grpo":
                if cfg.learner.filter_zero_advantage:
                    batch = drop_zero_advantage_groups(batch)
            version = step + 1
            metrics = learner.step(batch, version) if len(batch) else {}
            sd = learner.state_dict()
            ray.get([e.load_state_dict.remote(sd, version) for e in engines])
            t_update = time.perf_counter() - t0 - t_roll - t_reward
            comp = {k: float(np.mean([scores[r["episode_id"]][k] for r in records])) for k in ("task", "reflection", "behaviour")}
            n_actions = sum(len(r["actions"]) for r in records)
            errors = sum(a.startswith("error:") for r in records for a in r["actions"])
            row = {"step": version, "reward": float(np.mean([scores[r["episode_id"]]["total"] for r in records])), **comp,
                   "kl": metrics.get("kl", 0.0), "clipfrac": metrics.get("pg_clipfrac", 0.0),
                   "entropy": metrics.get("entropy", 0.0), "kept_episodes": len(batch),
                   **({"value_loss": metrics.get("value_loss", 0.0)} if cfg.learner.estimator == "gae" else {}),
                   "episode_turns": float(np.mean([r["turns"] for r in records])),
                   "tool_error_rate": errors / max(1, n_actions), "time_generate_tools": t_roll,
                   "time_reward": t_reward, "time_update": t_update,
                   "time_tools": float(np.mean([r["timings"]["tools_s"] for r in records]))}
            history.append(row)
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(f"rl/{k}", v, version)
            bar.set_postfix(reward=f"{row['reward']:.3f}")
            if version % cfg.rl.save_every == 0 or version == cfg.rl.steps:
                learner.save_checkpoint(str(ckpts.root), version, cfg.rl.keep_last, {"history": history})
    finally:
        writer.close()
        rt.shutdown()
        learner.shutdown()
        ray.kill(reward_actor)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    plot_reward_curve(history, out / "reward_curve.png")
    first = float(np.mean([h["reward"] for h in history[:5]])) if history else float("nan")
    last = float(np.mean([h["reward"] for h in history[-5:]])) if history else float("nan")
    return {"history": history, "reward_first5": first, "reward_last5": last, "out": str(out)}
