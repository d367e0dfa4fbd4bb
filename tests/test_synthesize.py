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
from tests.test_rollout import small_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_synthesize_writes_the_benchmark_layout_and_resumes(ray_local, syn_root, tiny_models, tmp_path):
    policy = str(tiny_models["text"])
    cfg = small_cfg(**{"episode.max_turns": 8, "episode.max_turn_tokens": 120, "synthesize.per_defect": 2,
                       "synthesize.policy": policy, "data.target_categories": "[syn_pill]"})
    out = tmp_path / "gen"

    def engine():  # a runtime's shutdown kills its engines: one per run
        return ray.remote(ScriptedEngine).options(num_cpus=0.1, max_concurrency=100).remote(policy, WELL_FORMED)

    res = run_synthesize(cfg, str(syn_root), out, engines=[engine()])
    defects = sorted(p.name for p in (syn_root / "syn_pill" / "test").iterdir() if p.name != "good")
    assert sorted(p.name for p in (out / "syn_pill").iterdir()) == defects
    for d in defects:
        images = sorted(p.name for p in (out / "syn_pill" / d / "image").iterdir())
        assert images == sorted(p.name for p in (out / "syn_pill" / d / "mask").iterdir()) == ["000.png", "001.png"]
        img = np.asarray(Image.open(out / "syn_pill" / d / "image" / "000.png"))
        mask = np.asarray(Image.open(out / "syn_pill" / d / "mask" / "000.png"))
        assert img.shape == (64, 64, 3) and mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    assert res["sources"] == {"agent": 6} and res["lost"] == 0
    assert len(TrajectoryStore(out / "trajectories").ids()) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_sources"] == {"agent": 6}

    # resume: nothing to do; a lost sample (mask missing) is made again, only that one
    assert run_synthesize(cfg, str(syn_root), out, engines=[engine()])["new"] == 0
    (out / "syn_pill" / defects[0] / "mask" / "001.png").unlink()
    again = run_synthesize(cfg, str(syn_root), out, engines=[engine()])
    assert again["new"] == 1 and again["sources"] == {"agent": 1}
    assert (out / "syn_pill" / defects[0] / "mask" / "001.png").exists()
    assert len(TrajectoryStore(out / "trajectories").ids()) == 6
