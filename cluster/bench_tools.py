"""``anomalyagent bench tools``: IG throughput batched vs one-by-one, and per-call latency
of each CPU backend, measured in one run on a local Ray.

The IG comparison uses the tiny diffusers pipeline with 8 concurrent callers: the same
actor code with ``max_batch_size=8`` against ``max_batch_size=1``. The ratio reflects how
much fixed per-call cost (text encoding, scheduler set-up, Python dispatch per step) a
batch shares; on a GPU the same effect comes from filling the device. Both variants get
the same placement (2 CPUs, so two intra-op threads); only the batch size differs.
"""
from __future__ import annotations

import asyncio
import copy
import statistics
import time
from typing import Dict

import numpy as np

from cluster.config import AppConfig


def _ig_throughput(pool, image: np.ndarray, callers: int, per_caller: int) -> float:
    async def caller(c: int):
        for i in range(per_caller):
            out = await pool.call({"prompt": "a dark crack", "seed": c * 1000 + i}, {"image": image})
            assert out["ok"], out

    async def run():
        await asyncio.gather(*[caller(c) for c in range(callers)])

    asyncio.run(run())  # warm-up: first batch loads kernels
    t0 = time.perf_counter()
    asyncio.run(run())
    return callers * per_caller / (time.perf_counter() - t0)


def _latency_ms(pool, args, images, ctx, n: int) -> float:
    pool.call_sync(args, images, ctx)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = pool.call_sync(args, images, ctx)
        times.append((time.perf_counter() - t0) * 1000)
        assert out["ok"], out
    return statistics.median(times)


def run_tools_bench(cfg: AppConfig, callers: int = 8, per_caller: int = 4, diffusion_px: int = 32,
                    steps: int = 4, latency_calls: int = 20) -> Dict[str, float]:
    import ray

    from actors.ray_actors import ToolPool
    from cluster.assets import tiny_inpaint_dir
    from cluster.ray_session import ray_session
    from rollout.data.synthetic import normal_image

    image = normal_image("syn_pill", 0, 64).image
    pipe = str(tiny_inpaint_dir(cfg))
    results: Dict[str, float] = {}
    with ray_session(cfg.ray):
        rates = {}
        for label, batch in (("one_by_one", 1), ("batched", callers)):
            tools = copy.deepcopy(cfg.tools)
            ig = tools.image_gen
            ig.backend, ig.model, ig.steps, ig.resolution = "diffusers", pipe, steps, diffusion_px
            ig.resources.max_batch_size, ig.resources.batch_wait_ms, ig.resources.num_cpus = batch, 20.0, 2.0
            pool = ToolPool("image_gen", tools, replicas=1)
            rates[label] = _ig_throughput(pool, image, callers, per_caller)
            stats = pool.stats()[0]
            print(f"IG tiny diffusers ({diffusion_px}px, {steps} steps), {callers} concurrent callers, {label:10s}: "
                  f"{rates[label]:6.1f} img/s, mean batch {stats['mean_batch']:.1f}")
            ray.kill(pool.actors[0], no_restart=True)
        results["ig_batched_img_s"] = rates["batched"]
        results["ig_one_by_one_img_s"] = rates["one_by_one"]
        results["ig_batching_speedup"] = rates["batched"] / rates["one_by_one"]

        ctx = {"category": "syn_pill", "defect_type": "crack"}
        edited = image.copy()
        edited[20:30, 20:40] = 30
        ctx_edit = {**ctx, "region_px": [16, 16, 44, 44]}
        cases = [
            ("prompt_gen", {}, None, ctx),
            ("image_gen", {"prompt": "a dark crack", "seed": 1}, {"image": image}, ctx),
            ("quality_eval", {}, {"normal": image, "edited": edited}, ctx_edit),
            ("knowledge", {}, None, ctx),
            ("mask_gen", {}, {"normal": image, "edited": edited}, ctx_edit),
        ]
        print(f"\nper-call latency through the Ray actor (median of {latency_calls}), CPU backends:")
        for name, args, images, c in cases:
            pool = ToolPool(name, cfg.tools, replicas=1)
            backend = getattr(getattr(cfg.tools, name), "backend", getattr(getattr(cfg.tools, name), "embedder", ""))
            ms = _latency_ms(pool, args, images, c, latency_calls)
            results[f"latency_ms_{name}"] = ms
            print(f"  {name:13s} ({backend:10s}) {ms:7.2f} ms")
            ray.kill(pool.actors[0], no_restart=True)
    print(f"\nig_batching_speedup={results['ig_batching_speedup']:.2f}")
    return results
