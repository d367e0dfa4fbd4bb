"""The episode state machine with a scripted policy and in-process tools."""
import asyncio

import numpy as np
import pytest

from rollout.config import EpisodeConfig
from rollout.episode import EpisodeRunner
from rollout.tasks import Task
from tests.scripted import WELL_FORMED, ScriptedLLM, answer, call


def run(tok, tools, pill, turns, cfg=None, truncate_last=False):
    task = Task("t0", "syn_pill", "crack", "unused.png", seed=5)
    llm = ScriptedLLM(tok, turns, truncate_last)
    runner = EpisodeRunner(task, pill.image, tok, llm, tools, cfg or EpisodeConfig(max_turns=10))
    return asyncio.run(runner.run()), llm


def test_well_formed_episode(tok, tools, pill):
    ep, llm = run(tok, tools, pill, WELL_FORMED)
    assert ep.status == "answer" and ep.answer["final_image_index"] == 2
    assert ep.actions == ["prompt_gen", "image_gen", "quality_eval", "knowledge", "image_gen", "quality_eval",
                          "mask_gen", "answer"]
    assert all(ep.format_ok) and ep.turns == 8
    assert len(ep.images) == 3 and ep.images[1].shape == pill.image.shape and 2 in ep.masks
    assert [s["image_index"] for s in ep.qe_scores] == [1, 2]
    assert all(0 <= s["quality_score"] <= 5 for s in ep.qe_scores)
    assert ep.image_meta[2]["prompt"].startswith("a thin dark crack")
    # the next request is exactly prompt + everything so far: nothing re-tokenized
    for rid, ids, params in llm.requests:
        assert ids[: len(ep.prompt_ids)] == ep.prompt_ids
    assert llm.requests[-1][1] == ep.prompt_ids + ep.response_ids[: len(llm.requests[-1][1]) - len(ep.prompt_ids)]


def test_response_mask_marks_exactly_the_policy_tokens(tok, tools, pill):
    ep, _ = run(tok, tools, pill, WELL_FORMED)
    policy = [tok.encode(t, add_special_tokens=False) for t in WELL_FORMED]
    assert len(ep.response_ids) == len(ep.response_mask) == len(ep.response_logprobs)
    # walk the mask: runs of 1s are exactly the scripted turns, in order
    runs, cur = [], []
    for tid, m in zip(ep.response_ids, ep.response_mask):
        if m:
            cur.append(tid)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    assert runs == policy
    assert all(lp == -0.25 for lp, m in zip(ep.response_logprobs, ep.response_mask) if m)
    assert all(lp == 0.0 for lp, m in zip(ep.response_logprobs, ep.response_mask) if not m)
    obs = tok.decode([t for t, m in zip(ep.response_ids, ep.response_mask) if not m])
    assert obs.count("<tool_response>") == 7 and '"quality_score"' in obs


@pytest.mark.parametrize("bad, code", [
    ("<thinking>x</thinking><tool_call>{\"name\": \"image_gen\", \"arguments\": {\"prompt\": }</tool_call>", "bad_json"),
    (call("paint_it", prompt="x"), "unknown_tool"),
    (call("image_gen"), "invalid_arguments"),  # missing prompt
    (call("image_gen", prompt=7), "invalid_arguments"),  # ill-typed
    ("<thinking>x</thinking><tool>{\"name\": \"image_gen\"}</tool>", "unknown_tag"),
    ("<thinking>x</thinking>", "no_action"),
    (call("quality_eval"), "bad_image_index"),  # nothing generated yet
    (answer(3), "bad_answer"),
    ("<thinking>x</thinking><tool_call>{\"name\": \"image_gen\", \"argu", "truncated"),
])
def test_malformed_turns_become_typed_observations(tok, tools, pill, bad, code):
    truncated = code == "truncated"
    turns = [bad] if truncated else [bad, call("prompt_gen")]
    ep, _ = run(tok, tools, pill, turns, EpisodeConfig(max_turns=2), truncate_last=truncated)
    assert ep.actions[0] == f"error:{code}"
    assert ep.status == "turn_cap"
    obs = tok.decode([t for t, m in zip(ep.response_ids, ep.response_mask) if not m])
    assert f'"error": "{code}"' in obs
    if not truncated:
        assert ep.actions[1] == "prompt_gen"  # the episode goes on after the error


def test_token_cap_stops_the_episode(tok, tools, pill):
    cfg = EpisodeConfig(max_turns=10, max_response_tokens=120, max_turn_tokens=60)
    ep, _ = run(tok, tools, pill, WELL_FORMED, cfg)
    assert ep.status == "token_cap" and len(ep.response_ids) <= 120


def test_seed_defaults_make_episodes_reproducible(tok, tools, pill):
    a, _ = run(tok, tools, pill, WELL_FORMED)
    b, _ = run(tok, tools, pill, WELL_FORMED)
    assert a.response_ids == b.response_ids
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
