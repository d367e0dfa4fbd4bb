"""``anomalyagent bench rollout``: the same episodes through (a) a sequential loop, one
episode after another in one process like the public reference implementation, and (b)
the rollout manager (Ray workers, many concurrent episodes, a batching engine actor).
Both use the same policy, tools, caps and tasks; measured in one run.

``bottleneck_busy`` is the busy fraction of the busiest actor during (b) (engine or a tool):
close to 1 means the run is limited by that actor, not by scheduling.
"""
from __future__ import annotations

import asyncio
import time
from typing import Dict

from cluster.config import AppConfig


class _InProcessLLM:
    def __init__(self, engine):
        self.engine = engine

    async def generate(self, request_id, prompt_ids, sampling_params):
        from policy.gen_types import GenRequest
        from rollout.episode import Generation

        r = self.engine.generate_batch([GenRequest(list(prompt_ids), dict(sampling_params))])[0]
        return Generation(r.token_ids, r.log_probs, r.stop_reason)


def _sequential(cfg: AppConfig, policy: str, specs):
    from transformers import AutoTokenizer

    from actors.registry import build_tool
    from actors.service import ToolService
    from policy.engine import HFEngine
    from rollout.episode import EpisodeRunner
    from rollout.format import TOOL_NAMES

    engine = HFEngine(policy, seed=cfg.seed)  # the whole context every turn, as a plain generate() call
    tok = AutoTokenizer.from_pretrained(policy)
    tools = {n: ToolService(build_tool(n, cfg.tools)) for n in TOOL_NAMES}
    llm = _InProcessLLM(engine)

    async def run_all():
        for s in specs:
            await EpisodeRunner(s.task, s.task.load_image(), tok, llm, tools, cfg.episode, s.episode_id).run()

    t0 = time.perf_counter()
    asyncio.run(run_all())
    return time.perf_counter() - t0, engine.counters


def run_rollout_bench(cfg: AppConfig, n_tasks: int = 16, group_size: int = 2) -> Dict[str, float]:
    import ray

    from cluster.assets import dataset_root, policy_path
    from cluster.ray_session import ray_session
    from cluster.runtime import start_runtime
    from rollout.data import open_dataset
    from rollout.manager import EpisodeSpec
    from rollout.tasks import make_tasks

    import copy

    cfg = copy.deepcopy(cfg)
    total = n_tasks * group_size  # all episodes in flight at once, as the manager is meant to run
    cfg.rollout.episodes_per_worker = max(cfg.rollout.episodes_per_worker, -(-total // cfg.rollout.num_workers))
    cfg.policy.engine.max_batch_size = max(cfg.policy.engine.max_batch_size, total)
    policy = policy_path(cfg)
    ds = open_dataset(cfg.data.format, dataset_root(cfg), cfg.data.target_categories)
    tasks = make_tasks(ds, ds.categories, per_defect=max(1, n_tasks // 6 + 1), seed=cfg.seed)[:n_tasks]
    specs = [EpisodeSpec(f"bench-{t.task_id}-g{k}", t, t.task_id) for t in tasks for k in range(group_size)]
    print(f"{len(specs)} episodes ({n_tasks} tasks x {group_size}), max {cfg.episode.max_turns} turns of "
          f"{cfg.episode.max_turn_tokens} tokens, policy {policy}")

    seq_s, seq_engine = _sequential(cfg, policy, specs)
    print(f"(a) sequential loop      : {len(specs) / seq_s:6.2f} episodes/s ({seq_s:.1f}s; engine decode "
          f"{seq_engine['decode_s']:.1f}s = {1e3 * seq_engine['decode_s'] / max(1, seq_engine['decode_row_steps']):.3f} "
          f"ms per row-step, prefill {seq_engine['prefill_s']:.1f}s)")

    with ray_session(cfg.ray):
        rt = start_runtime(cfg, policy)
        warm = rt.manager.run([EpisodeSpec("warmup-g0", tasks[0], "warmup")], progress=False)  # actors start
        engine_before = ray.get(rt.engines[0].stats.remote())
        before = {"engine": engine_before["busy_s"],
                  **{n: p.stats()[0]["busy_s"] for n, p in rt.tools.items()}}
        report = rt.manager.run(specs, progress=True, keep_records=False)
        after = {"engine": ray.get(rt.engines[0].stats.remote())["busy_s"],
                 **{n: p.stats()[0]["busy_s"] for n, p in rt.tools.items()}}
        engine_stats = ray.get(rt.engines[0].stats.remote())
        rt.shutdown()
    busy = {k: (after[k] - before[k]) / report.wall_s for k in after}
    print(f"(b) rollout manager      : {len(specs) / report.wall_s:6.2f} episodes/s ({report.wall_s:.1f}s, "
          f"{cfg.rollout.num_workers} workers x {cfg.rollout.episodes_per_worker} episodes, engine mean batch "
          f"{engine_stats['mean_batch']:.1f}, prefix reuse {engine_stats['prefix_reused_fraction']:.0%} of prompt "
          f"tokens); warm-up {warm.wall_s:.1f}s not counted")
    e = {k: engine_stats[k] - engine_before[k] for k in ("kv_s", "prefill_s", "decode_s", "decode_steps", "decode_row_steps")}
    print(f"engine time: decode {e['decode_s']:.1f}s ({e['decode_steps']} steps, "
          f"{1e3 * e['decode_s'] / max(1, e['decode_row_steps']):.3f} ms per row-step), prefill {e['prefill_s']:.1f}s, "
          f"KV copies {e['kv_s']:.1f}s")
    print("busy fraction: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])))
    speedup = seq_s / report.wall_s
    bottleneck = max(busy.values())
    print(f"rollout_speedup={speedup:.2f} bottleneck_busy={bottleneck:.2f}")
    return {"rollout_speedup": speedup, "bottleneck_busy": bottleneck, "sequential_s": seq_s, "manager_s": report.wall_s}
