"""``anomalyagent synthesize`` on the synthetic dataset: the benchmark layout, resumable."""
import json

import numpy as np
import pytest
import ray
from PIL import Image

from cluster.synthesize_cmd import run_synthesize
from rollout.store import TrajectoryStore
from tests.fake_engine import ScriptedEngine
from tests.scripted import WELL_FORMED
from tests.small_config import small_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_synthesize_delivers_only_what_passes_the_gate_and_resumes(ray_local, syn_root96, tiny_models, tmp_path):
    """The scripted agent always draws a dark crack: delivered for `crack`, refused by the
    judge for `scratch` and `stain` — re-run with a new seed, then counted, never written."""
    policy = str(tiny_models["text"])
    cfg = small_cfg(**{"episode.max_turns": 8, "episode.max_turn_tokens": 120, "synthesize.per_defect": 2,
                       "synthesize.max_attempts": 2, "synthesize.policy": policy,
                       "data.target_categories": "[syn_pill]"})
    out = tmp_path / "gen"

    def engine():  # a runtime's shutdown kills its engines: one per run
        return ray.remote(ScriptedEngine).options(num_cpus=0.1, max_concurrency=100).remote(policy, WELL_FORMED)

    res = run_synthesize(cfg, str(syn_root96), out, engines=[engine()])
    defects = sorted(p.name for p in (syn_root96 / "syn_pill" / "test").iterdir() if p.name != "good")
    assert defects == ["crack", "scratch", "stain"]
    assert sorted(p.name for p in (out / "syn_pill").iterdir()) == ["crack"]  # nothing else was written
    images = sorted(p.name for p in (out / "syn_pill" / "crack" / "image").iterdir())
    assert images == sorted(p.name for p in (out / "syn_pill" / "crack" / "mask").iterdir()) == ["000.png", "001.png"]
    img = np.asarray(Image.open(out / "syn_pill" / "crack" / "image" / "000.png"))
    mask = np.asarray(Image.open(out / "syn_pill" / "crack" / "mask" / "000.png"))
    assert img.shape == (96, 96, 3) and mask.shape == (96, 96) and set(np.unique(mask)) == {0, 255}
    assert res["sources"] == {"agent": 2} and res["lost"] == 0 and res["delivered"] == 2
    assert res["undelivered"] == {"syn_pill/scratch/agent": 2, "syn_pill/stain/agent": 2}
    # one crack failed its first attempt (its crack came out blob-shaped) and passed the re-run
    assert res["gate_reasons"] == {"qe_fail": 9} and res["first_attempt_yield"] == pytest.approx(1 / 6)
    assert res["attempts_per_delivered"] == 1.5 and res["ig_calls_per_delivered"] == 3.0
    rerun = [json.loads(p.read_text()) for p in (out / "samples").glob("syn-syn_pill-crack-*.json")]
    assert sorted(len(m["attempts"]) for m in rerun) == [1, 2]
    assert [a["passed"] for m in rerun if len(m["attempts"]) == 2 for a in m["attempts"]] == [False, True]
    refused = json.loads((out / "samples" / "syn-syn_pill-stain-000.undelivered.json").read_text())
    seeds = [a["seed"] for a in refused["attempts"]]
    assert [a["episode_id"] for a in refused["attempts"]] == ["syn-syn_pill-stain-000", "syn-syn_pill-stain-000-r2"]
    assert len(set(seeds)) == 2 and not any(a["passed"] for a in refused["attempts"])
    assert [a["qe"]["review"] for a in refused["attempts"]] == [  # the review names what is wrong for a stain
        "Use a red colour for the stain.", "The defect should look like a spot (blob), not a line-shaped mark."]
    assert len(TrajectoryStore(out / "trajectories").ids()) == 3 + 4 * 2  # every attempt is stored

    # resume: the delivered ones are kept; the refused ones are tried again; a lost sample is made again
    (out / "syn_pill" / "crack" / "mask" / "001.png").unlink()
    half = out / "syn_pill" / "crack" / "image" / "000.png"
    half.write_bytes(half.read_bytes()[:40])  # a half-written PNG: detected, named and made again
    again = run_synthesize(cfg, str(syn_root96), out, engines=[engine()])
    assert again["new"] == 6 and again["sources"] == {"agent": 2} and again["delivered"] == 2
    assert np.asarray(Image.open(half)).shape == (96, 96, 3)
    assert (out / "syn_pill" / "crack" / "mask" / "001.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_sources"] == {"agent": 2} and sum(summary["undelivered"].values()) == 4
