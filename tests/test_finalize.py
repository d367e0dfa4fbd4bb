"""From an episode to one sample: the agent's choice, the fallbacks, and the tool chain."""
import asyncio

import numpy as np

from rollout.config import EpisodeConfig
from rollout.episode import EpisodeRunner
from rollout.finalize import chosen_index, finalize
from rollout.tasks import Task
from tests.scripted import WELL_FORMED, ScriptedLLM, call


def record_of(tok, tools, pill, turns):
    task = Task("t0", "syn_pill", "crack", "unused.png", seed=5)
    runner = EpisodeRunner(task, pill.image, tok, ScriptedLLM(tok, turns), tools, EpisodeConfig(max_turns=len(turns) or 1))
    return asyncio.run(runner.run()).record()


def test_the_agents_answer_and_mask_win(tok, tools, pill):
    rec = record_of(tok, tools, pill, WELL_FORMED)
    s = asyncio.run(finalize(rec, tools))
    assert (s.source, s.image_index) == ("agent", 2)
    assert s.image is rec["images"][2] and s.mask is rec["masks"][2]


def test_no_answer_takes_the_generated_image_and_makes_its_mask(tok, tools, pill):
    rec = record_of(tok, tools, pill, WELL_FORMED[:2])  # prompt_gen, image_gen, then the turn cap
    assert rec["status"] == "turn_cap" and chosen_index(rec) == (1, False)
    s = asyncio.run(finalize(rec, tools))
    assert (s.source, s.image_index) == ("agent_fallback_choice", 1)
    assert s.mask.shape == pill.image.shape[:2] and s.mask.dtype == np.uint8 and 0 < (s.mask > 0).mean() < 0.5


def test_best_scored_image_is_chosen_without_an_answer():
    rec = {"images": [0, 1, 2, 3], "status": "turn_cap", "answer": None,
           "qe_scores": [{"image_index": 1, "location_score": 4, "quality_score": 4},
                         {"image_index": 3, "location_score": 1, "quality_score": 2}]}
    assert chosen_index(rec) == (1, False)
    rec["status"], rec["answer"] = "answer", {"final_image_index": 3}
    assert chosen_index(rec) == (3, True)


def test_nothing_generated_falls_back_to_the_tool_chain(tok, tools, pill):
    rec = record_of(tok, tools, pill, [call("knowledge", "look up")])
    assert len(rec["images"]) == 1
    s = asyncio.run(finalize(rec, tools, seed=3))
    assert s.source == "tool_chain" and s.image.shape == pill.image.shape
    changed = np.any(s.image != pill.image, axis=2)
    assert (s.mask > 0).any() and changed[s.mask > 0].mean() > 0.9  # the mask marks edited pixels
