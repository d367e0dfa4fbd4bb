"""Tool failures: a tool that raises, hangs or returns garbage gives the episode a typed
error observation within the timeout, and the failure is counted."""
import asyncio
import threading
import time

import pytest

from actors.service import ToolService
from cluster.bench_faults import GarbageTool, HangingTool, RaisingTool
from rollout.config import EpisodeConfig
from rollout.episode import EpisodeRunner
from rollout.tasks import Task
from tests.scripted import ScriptedLLM, call, local_tools

pytestmark = pytest.mark.reliability
RELEASE = threading.Event()


@pytest.fixture(autouse=True, scope="module")
def release_hung_threads():
    yield
    RELEASE.set()


CASES = [(RaisingTool(), "tool_failure", "CUDA error"), (HangingTool(RELEASE), "timeout", "no answer within"),
         (GarbageTool("a string"), "bad_output", "str"), (GarbageTool({"image": [1, 2]}), "bad_output", "image"),
         (GarbageTool({"region": [0, 0, 1, 1]}), "bad_output", "lacks 'image'")]


@pytest.mark.parametrize("tool,code,words", CASES, ids=["raises", "hangs", "string", "list-image", "missing-key"])
def test_faulty_image_gen_becomes_a_typed_observation(tok, pill, tool, code, words):
    tools = local_tools()
    tools["image_gen"] = service = ToolService(tool, timeout_s=0.5)
    turns = [call("image_gen", "edit", prompt="a dark crack"), call("knowledge", "look up")]
    runner = EpisodeRunner(Task("t", "syn_pill", "crack", "x.png", seed=1), pill.image, tok, ScriptedLLM(tok, turns),
                           tools, EpisodeConfig(max_turns=2))
    t0 = time.perf_counter()
    ep = asyncio.run(runner.run())
    assert time.perf_counter() - t0 < 5
    assert ep.actions == [f"error:{code}", "knowledge"] and ep.status == "turn_cap"
    err = ep.tool_log[0]["error"]
    assert err["code"] == code and words in err["message"]
    assert service.stats()["errors"] == {code: 1} and service.stats()["calls"] == 1
    text = tok.decode(ep.response_ids)
    assert f'"error": "{code}"' in text  # what the policy reads next
