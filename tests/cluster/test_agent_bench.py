"""The agent ablation's fixed pipelines as engines. ``bench agent --quick`` end to end runs
as the demo's ablation stage (tests/cluster/test_demo.py), with checkpoints the demo trained."""

from benchmarks.baselines import next_turn, observations
from rollout.parser import ToolCall, parse_turn
from rollout.prompts import observation_text


def _action(turn):
    a = parse_turn(turn).action
    return (a.name, a.arguments) if isinstance(a, ToolCall) else ("answer", a.content["final_image_index"])


PG = {"prompt": "a large dark crack (crack) across the marble, sharp high contrast"}


def test_fixed_prompt_pipeline():
    assert _action(next_turn("fixed", "syn_marble", "crack", [])) == ("image_gen", {"prompt": "a crack on the syn_marble"})
    assert _action(next_turn("fixed", "bottle", "broken_large", []))[1]["prompt"] == "a broken large on the bottle"
    assert _action(next_turn("fixed", "c", "d", [{"image_index": 1, "region": [0, 0, 1, 1]}])) == ("mask_gen", {"image_index": 1})
    assert _action(next_turn("fixed", "c", "d", [{}, {"image_index": 1, "mask_area": 0.1}])) == ("answer", 1)


def test_pg_one_shot_copies_pgs_prompt():
    assert _action(next_turn("pg", "syn_marble", "crack", [])) == ("prompt_gen", {})
    assert _action(next_turn("pg", "syn_marble", "crack", [PG])) == ("image_gen", PG)


def test_best_of_k_keeps_the_best_scored_image():
    obs = [PG]
    actions = []
    scores = {1: (5.0, 2.0, False), 2: (5.0, 4.5, True), 3: (5.0, 4.0, True)}
    for _ in range(12):
        name, arg = _action(next_turn("best_of_k", "syn_marble", "crack", obs, k=3))
        actions.append(name)
        if name == "image_gen":
            obs.append({"image_index": len([o for o in obs if "region" in o]) + 1, "region": [0, 0, 1, 1]})
        elif name == "quality_eval":
            loc, q, ok = scores[arg["image_index"]]
            obs.append({"image_index": arg["image_index"], "location_score": loc, "quality_score": q, "pass": ok})
        elif name == "mask_gen":
            assert arg == {"image_index": 2}
            obs.append({"image_index": 2, "mask_area": 0.01})
        else:
            assert arg == 2
            break
    assert actions == ["image_gen", "quality_eval"] * 3 + ["mask_gen", "answer"]


def test_observations_are_read_back_from_the_context():
    text = "x" + observation_text(PG) + "y" + observation_text({"image_index": 1, "region": [0.1, 0.2, 0.3, 0.4]})
    assert observations(text) == [PG, {"image_index": 1, "region": [0.1, 0.2, 0.3, 0.4]}]
