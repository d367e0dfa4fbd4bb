"""Stored runs and sample folders for the page tests (over HTTP and in a real browser)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from rollout.store import TrajectoryStore

TURNS = ['<thinking>I need a prompt for the crack.</thinking><tool_call>{"name": "prompt_gen", "arguments": {}}</tool_call>',
         '<thinking>Edit image 0 with the prompt.</thinking><tool_call>{"name": "image_gen", "arguments": {"prompt": "a dark crack"}}</tool_call>',
         '<thinking>Done.</thinking><answer>{"status": "success", "final_image_index": 1}</answer>']


def _record(tok, eid, group, category="syn_pill", status="answer"):
    img = np.full((16, 16, 3), 200, np.uint8)
    edited = img.copy()
    edited[4:8, 4:12] = 20
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:12] = 255
    ids, rmask = [], []
    for k, t in enumerate(TURNS):
        turn = tok.encode(t, add_special_tokens=False)
        ids += turn
        rmask += [1] * len(turn)
        if k + 1 < len(TURNS):
            obs = tok.encode("observation", add_special_tokens=False)
            ids += obs
            rmask += [0] * len(obs)
    qe = {"image_index": 1, "turn": 2, "location_score": 5.0, "quality_score": 4.2, "pass": True}
    return {"episode_id": eid, "images": [img, edited], "masks": {1: mask},
            "task": {"task_id": group, "category": category, "defect_type": "crack", "knowledge": "shipped"},
            "prompt_ids": [1, 2], "response_ids": ids, "response_mask": rmask, "response_logprobs": [0.0] * len(ids),
            "tool_log": [{"turn": 1, "name": "prompt_gen", "arguments": {}, "ok": True, "result": {"prompt": "a dark crack"}},
                         {"turn": 2, "name": "image_gen", "arguments": {"prompt": "a dark crack"}, "ok": True,
                          "result": {"region": [0.1, 0.1, 0.9, 0.9]}}],
            "qe_scores": [qe], "actions": ["prompt_gen", "image_gen", "answer"], "format_ok": [True] * 3, "turns": 3,
            "status": status, "answer": {"status": "success", "final_image_index": 1},
            "image_meta": [{"source": "normal"}, {"source": "image_gen", "prompt": "a dark crack", "qe": qe}],
            "timings": {"generate_s": 0.1, "tools_s": 0.1}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_models, tok):
    root = tmp_path_factory.mktemp("runs")
    train = TrajectoryStore(root / "train" / "trajectories")
    for g in range(2):
        train.write(_record(tok, f"s0-syn_pill-crack-0-g{g}", "s0-syn_pill-crack-0", status="answer" if g else "turn_cap"),
                    {"group": "s0-syn_pill-crack-0"})
    train.write_rewards(1, [{"episode_id": f"s0-syn_pill-crack-0-g{g}", "group": "s0-syn_pill-crack-0", "step": 1,
                             "policy_version": 0, "task": float(g), "reflection": 0.0, "behaviour": 0.5,
                             "total": g + 0.5, "reward": g + 0.5, "advantage": 0.707 if g else -0.707} for g in range(2)])
    ckpt = root / "train" / "checkpoints" / "step_1"
    ckpt.mkdir(parents=True)
    (root / "train" / "checkpoints" / "latest").write_text("step_1")
    os.symlink(tiny_models["text"], ckpt / "model")
    gen = TrajectoryStore(root / "gen" / "trajectories")
    gen.write(_record(tok, "syn-syn_marble-crack-000", "syn-syn_marble-crack-000", category="syn_marble"))
    (root / "gen" / "samples").mkdir()
    (root / "gen" / "samples" / "syn-syn_marble-crack-000.json").write_text(json.dumps(
        {"attempts": [{"episode_id": "syn-syn_marble-crack-000", "source": "agent", "passed": True}]}))
    (root / "gen" / "summary.json").write_text(json.dumps({"policy": str(tiny_models["text"])}))
    return root


@pytest.fixture
def samples(tmp_path, syn_root):
    """An agent's and a baseline's output folders in synthesize's layout."""
    for name, n in (("agent", 3), ("fixed", 2)):
        for k in range(n):
            for sub in ("image", "mask"):
                p = tmp_path / name / "syn_pill" / "crack" / sub / f"{k:03d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8) if sub == "mask" else (8, 8, 3), 255 if sub == "mask" else 10 * k, np.uint8)).save(p)
    return tmp_path
