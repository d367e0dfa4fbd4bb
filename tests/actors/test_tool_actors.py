"""The tools as Ray actors on a real local Ray cluster."""
import asyncio
import os
import signal

import numpy as np
import pytest
import ray

from actors.config import ToolsConfig
from actors.ray_actors import ToolPool, start_tools

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def tools_cfg(**resources):
    cfg = ToolsConfig()
    cfg.knowledge.embedder = "hashing"
    for section in ("prompt_gen", "image_gen", "quality_eval", "knowledge", "mask_gen"):
        for k, v in resources.items():
            setattr(getattr(cfg, section).resources, k, v)
    return cfg


def test_all_five_tools_through_ray(ray_local, pill):
    pools = start_tools(tools_cfg(num_cpus=0.1))
    ctx = {"category": "syn_pill", "defect_type": "crack"}
    prompt = pools["prompt_gen"].call_sync({}, None, ctx)["result"]["prompt"]
    assert "crack" in prompt
    know = pools["knowledge"].call_sync({"k": 2}, None, ctx)["result"]
    assert know["entries"][0]["defect_type"] == "crack"
    edit = pools["image_gen"].call_sync({"prompt": prompt, "seed": 1}, {"image": pill.image}, ctx)["result"]
    assert edit["image"].shape == pill.image.shape and edit["image"].dtype == np.uint8
    ctx["region_px"] = edit["region_px"]
    score = pools["quality_eval"].call_sync({"image_index": 1}, {"normal": pill.image, "edited": edit["image"]}, ctx)
    assert 0 <= score["result"]["quality_score"] <= 5
    mask = pools["mask_gen"].call_sync({"image_index": 1}, {"normal": pill.image, "edited": edit["image"]}, ctx)
    assert mask["result"]["mask"].shape == (96, 96) and mask["result"]["area"] > 0
    bad = pools["image_gen"].call_sync({"prompt": 5}, {"image": pill.image}, ctx)
    assert bad["ok"] is False and bad["error"]["field"] == "prompt"
    for pool in pools.values():
        assert pool.check_health()[0]["ok"]
        ray.kill(pool.actors[0], no_restart=True)


def test_concurrent_calls_batch_inside_the_actor(ray_local, pill):
    pool = ToolPool("image_gen", tools_cfg(num_cpus=0.1, max_batch_size=8, batch_wait_ms=100))

    async def go():
        return await asyncio.gather(*[pool.call({"prompt": "a red stain", "seed": s}, {"image": pill.image})
                                      for s in range(8)])

    outs = asyncio.run(go())
    assert all(o["ok"] for o in outs)
    stats = pool.stats()[0]
    assert stats["items"] == 8 and stats["mean_batch"] > 1.5
    ray.kill(pool.actors[0], no_restart=True)


def test_killed_tool_actor_restarts_and_answers(ray_local, pill):
    pool = ToolPool("quality_eval", tools_cfg(num_cpus=0.1, max_restarts=2))
    ctx = {"category": "syn_pill", "defect_type": "stain"}
    args = ({}, {"normal": pill.image, "edited": pill.image}, ctx)
    assert pool.call_sync(*args)["ok"]
    pid = ray.get(pool.actors[0].pid.remote())
    os.kill(pid, signal.SIGKILL)
    out = pool.call_sync(*args, timeout=60)  # retried on the restarted actor
    assert out["ok"] and ray.get(pool.actors[0].pid.remote()) != pid
    ray.kill(pool.actors[0], no_restart=True)
    gone = asyncio.run(pool.call(*args))
    assert gone["ok"] is False and gone["error"]["code"] == "unavailable"
