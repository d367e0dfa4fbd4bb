"""The three-part reward on hand-made trajectories, with exact expected values."""
import numpy as np
import pytest

from rewards.actor import RewardActor, slim
from rewards.config import RewardConfig
from rewards.reward import group_rewards, reward
from rewards.verl_reward import compute_score


def rec(actions, qe, status="answer", final=None, turns=None, format_ok=None, eid="e"):
    return {"episode_id": eid, "actions": actions, "qe_scores": qe, "status": status,
            "answer": {"status": "success", "final_image_index": final} if final is not None else None,
            "turns": turns if turns is not None else len(actions),
            "format_ok": format_ok if format_ok is not None else [True] * len(actions)}


def qe(index, turn, loc, q):
    return {"image_index": index, "turn": turn, "location_score": loc, "quality_score": q}


WELL = ["prompt_gen", "image_gen", "quality_eval", "knowledge", "image_gen", "quality_eval", "mask_gen", "answer"]


def test_well_formed_refinement_episode():
    r = reward(rec(WELL, [qe(1, 3, 5, 2), qe(2, 6, 5, 4)], final=2), RewardConfig())
    # S1 = (2.5 + 1) / 5 = 0.7, S2 = (2.5 + 2) / 5 = 0.9; KR after S=0.7 >= δ: no bonus
    assert r.task == pytest.approx(0.9) and r.reflection == pytest.approx(0.2) and r.behaviour == pytest.approx(1.0)
    assert r.total == pytest.approx(1.0 * 0.9 + 0.5 * 0.2 + 0.2 * 1.0)


def test_kr_bonus_when_quality_is_low():
    r = reward(rec(WELL, [qe(1, 3, 2.5, 2), qe(2, 6, 5, 4)], final=2), RewardConfig())
    # S1 = (1.25 + 1) / 5 = 0.45 < 0.6: +λ_KR
    assert r.reflection == pytest.approx(0.45) and r.behaviour == pytest.approx(1.2)
    assert r.total == pytest.approx(0.9 + 0.5 * 0.45 + 0.2 * 1.2)


def test_errors_invalid_transitions_and_turn_penalty():
    actions = ["prompt_gen", "mask_gen", "error:bad_json", "quality_eval"]
    r = reward(rec(actions, [], status="turn_cap", turns=10, format_ok=[True, True, False, True]), RewardConfig())
    # pg->mg invalid (-0.5), error (-0.5), no check after an error, no format bonus, 2 turns over T_max (-0.2)
    assert (r.task, r.reflection) == (0.0, 0.0)
    assert r.behaviour == pytest.approx(-1.2) and r.total == pytest.approx(0.2 * -1.2)


def test_reflection_counts_only_improvements_and_first_score_per_image():
    scores = [qe(1, 2, 5, 4), qe(1, 3, 0, 0), qe(2, 5, 5, 1), qe(3, 7, 5, 3)]
    r = reward(rec(["image_gen"] * 8, scores, status="turn_cap"), RewardConfig())
    # per generation: 0.9, 0.6, 0.8 -> improvements: 0 + 0.2
    assert r.reflection == pytest.approx(0.2)


def test_pass_bonus_needs_a_passing_score_and_a_mask_of_the_answered_image():
    scores = [{**qe(1, 3, 5, 2), "pass": False}, {**qe(2, 6, 5, 4), "pass": True}]
    base = rec(WELL, scores, final=2)
    assert reward({**base, "masked_images": [2]}, RewardConfig()).task == pytest.approx(0.9 + 0.5)
    assert reward({**base, "masked_images": []}, RewardConfig()).task == pytest.approx(0.9)  # no mask: not deliverable
    assert reward({**base, "masked_images": [2]}, RewardConfig(pass_bonus=0.0)).task == pytest.approx(0.9)
    assert reward({**rec(WELL, scores, final=1), "masked_images": [1]}, RewardConfig()).task == pytest.approx(0.7)
    assert slim({**base, "masks": {2: np.zeros((2, 2))}})["masked_images"] == [2]


def test_answer_without_a_score_or_no_answer_gives_zero_task():
    assert reward(rec(["image_gen", "answer"], [], final=1), RewardConfig()).task == 0.0
    assert reward(rec(["image_gen"], [qe(1, 1, 5, 5)], status="token_cap"), RewardConfig()).task == 0.0


def test_group_normalization_modes():
    cfg = RewardConfig()
    parts = [reward(rec(WELL, [qe(1, 3, 5, q1), qe(2, 6, 5, q2)], final=2), cfg) for q1, q2 in ((2, 4), (2, 2), (4, 5))]
    assert np.allclose(group_rewards(parts, cfg), [p.total for p in parts])
    per = group_rewards(parts, RewardConfig(normalize="per_component"))
    task = np.array([p.task for p in parts])
    ref = np.array([p.reflection for p in parts])
    expected = (task - task.mean()) / (task.std() + 1e-6) + 0.5 * (ref - ref.mean()) / (ref.std() + 1e-6)
    assert np.allclose(per, expected)  # behaviour is equal across the group: contributes 0
    with pytest.raises(ValueError):
        group_rewards(parts, RewardConfig(normalize="max"))


def test_reward_actor_and_verl_function_agree():
    r = rec(WELL, [qe(1, 3, 5, 2), qe(2, 6, 5, 4)], final=2, eid="x")
    by_actor = RewardActor().score([slim({**r, "images": ["heavy"]})])[0]
    by_verl = compute_score(extra_info={"episode": r})
    assert by_actor["episode_id"] == "x" and by_actor["total"] == pytest.approx(by_verl["score"])
    assert by_verl["task"] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        compute_score(extra_info={})
