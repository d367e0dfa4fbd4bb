"""The Ray-free service around a tool: timeouts, failures, batching, schema checks."""
import asyncio
import threading

import numpy as np

from actors.image_gen import ProceduralImageGen
from actors.service import ToolService
from actors.tool import Tool


class HangingTool(Tool):
    name = "hanging"
    schema = {"type": "object"}

    def __init__(self):
        self.release = threading.Event()

    def run_one(self, req):
        self.release.wait(30)  # hangs until the test lets it go
        return {"late": True}


class RaisingTool(Tool):
    name = "raising"
    schema = {"type": "object"}

    def run_one(self, req):
        raise RuntimeError("CUDA out of memory")


class GarbageTool(Tool):
    name = "garbage"
    schema = {"type": "object"}

    def run_one(self, req):
        return {}

    def run_batch(self, reqs):
        return []  # wrong number of results


def run(coro):
    return asyncio.run(coro)


def test_hanging_tool_hits_its_timeout_and_health_says_so():
    tool = HangingTool()
    svc = ToolService(tool, timeout_s=0.2)

    async def go():
        out = await svc.call({})
        health_error = None
        try:
            svc.health()
        except RuntimeError as e:
            health_error = e
        tool.release.set()
        return out, health_error

    out, health_error = run(go())
    assert out["ok"] is False and out["error"]["code"] == "timeout" and out["error"]["tool"] == "hanging"
    assert health_error is None or "busy" in str(health_error)
    assert svc.stats()["errors"] == {"timeout": 1}


def test_raising_and_garbage_tools_become_typed_errors():
    out = run(ToolService(RaisingTool()).call({}))
    assert out["error"]["code"] == "tool_failure" and "out of memory" in out["error"]["message"]
    out = run(ToolService(GarbageTool()).call({}))
    assert out["error"]["code"] == "tool_failure" and "returned 0 results" in out["error"]["message"]


def test_schema_and_image_checks_before_work(pill):
    svc = ToolService(ProceduralImageGen())
    out = run(svc.call({"prompt": "x", "region": "middle"}, {"image": pill.image}))
    assert out["error"]["code"] == "invalid_arguments" and out["error"]["field"] == "region"
    out = run(svc.call({"prompt": "x"}, {"image": np.zeros((64, 64), np.float32)}))
    assert out["error"]["field"] == "image"
    out = run(svc.call(["prompt"], {"image": pill.image}))
    assert out["error"]["code"] == "invalid_arguments"
    assert svc.batcher.items == 0  # nothing reached the tool


def test_concurrent_callers_are_batched_and_results_stay_in_order(pill):
    svc = ToolService(ProceduralImageGen(), max_batch_size=8, batch_wait_ms=50)

    async def go():
        return await asyncio.gather(*[svc.call({"prompt": "a dark crack", "seed": s}, {"image": pill.image})
                                      for s in range(8)])

    outs = run(go())
    assert all(o["ok"] for o in outs)
    ig = ProceduralImageGen()
    from actors.tool import ToolRequest

    for s, o in enumerate(outs):
        assert np.array_equal(o["result"]["image"], ig.run_one(ToolRequest({"prompt": "a dark crack", "seed": s},
                                                                           {"image": pill.image}))["image"])
    stats = svc.stats()
    assert stats["items"] == 8 and stats["batches"] < 8 and stats["mean_batch"] > 1
