"""From an episode to one sample, and the delivery gate: the agent's choice, the fallbacks,
and the samples that must never be delivered."""
import asyncio

import numpy as np

from rollout.config import EpisodeConfig
from rollout.episode import EpisodeRunner
from rollout.finalize import chosen_index, deliver, finalize
from rollout.tasks import Task
from tests.scripted import WELL_FORMED, ScriptedLLM, answer, call

CRACK = "a medium dark crack (crack) across the pill, sharp high contrast"


def record_of(tok, tools, pill, turns, defect="crack"):
    task = Task("t0", "syn_pill", defect, "unused.png", seed=5)
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


def test_nothing_generated_delivers_nothing_unless_the_tool_chain_is_asked_for(tok, tools, pill):
    rec = record_of(tok, tools, pill, [call("knowledge", "look up")])
    assert len(rec["images"]) == 1
    assert asyncio.run(finalize(rec, tools, seed=3)) is None
    d = asyncio.run(deliver(rec, tools, seed=3))
    assert (d.passed, d.reason, d.source) == (False, "nothing_generated", "none")
    s = asyncio.run(finalize(rec, tools, seed=3, tool_chain=True))
    assert s.source == "tool_chain" and s.image.shape == pill.image.shape
    changed = np.any(s.image != pill.image, axis=2)
    assert (s.mask > 0).any() and changed[s.mask > 0].mean() > 0.9  # the mask marks edited pixels


def _episode(prompt, defect="crack"):
    return [call("image_gen", "edit", prompt=prompt), call("mask_gen", "mask", image_index=1), answer(1)]


def test_gate_passes_the_right_defect(tok, tools, pill):
    rec = record_of(tok, tools, pill, _episode(CRACK))
    d = asyncio.run(deliver(rec, tools))
    assert d.passed and d.reason is None and d.source == "agent" and d.qe["pass"] is True
    assert d.changed_px > 0 and d.coverage >= 0.9


def test_gate_refuses_the_wrong_defect_type(tok, tools, pill):
    """A round red stain asked to be a crack: visible, masked, and still not delivered."""
    rec = record_of(tok, tools, pill, _episode("a small red spot (stain) on the pill, clearly visible"))
    d = asyncio.run(deliver(rec, tools))
    assert (d.passed, d.reason) == (False, "qe_fail") and d.qe["pass"] is False
    assert "crack" in d.qe["review"]


def test_gate_refuses_an_invisible_change_and_an_empty_mask(tok, tools, pill):
    rec = record_of(tok, tools, pill, _episode(CRACK))
    unchanged = {**rec, "images": [rec["images"][0], rec["images"][0].copy()]}
    assert asyncio.run(deliver(unchanged, tools)).reason == "no_change"
    blank = {**rec, "masks": {1: np.zeros_like(rec["masks"][1])}}
    d = asyncio.run(deliver(blank, tools))
    assert (d.passed, d.reason) == (False, "empty_mask")
    elsewhere = np.zeros_like(rec["masks"][1])
    elsewhere[:4, :4] = 255
    assert asyncio.run(deliver({**rec, "masks": {1: elsewhere}}, tools)).reason == "mask_misses_change"
