"""The user's own categories: the pre-flight knowledge check, then ``synthesize`` and ``bench
mvtec --quick`` end to end on a dataset the knowledge base does not hold (grayscale,
16-bit, JPEG and non-square images)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cluster.knowledge_check import DERIVED_FILE, KnowledgeError, prepare_knowledge
from rollout.data import open_dataset
from tests.small_config import small_cfg
from tests.trees import OWN, OWN_SIZE, make_own_categories

ROOT = Path(__file__).resolve().parents[2]
PAIRS = sorted(f"{c}/{d}" for c, (_, renames) in OWN.items() for d in renames.values())


@pytest.fixture(scope="module")
def own_root(syn_root96, tmp_path_factory):
    return make_own_categories(tmp_path_factory.mktemp("own"), syn_root96)


def test_preflight_derives_only_where_the_protocol_allows(own_root, tmp_path, capsys):
    ds = open_dataset("mvtec", own_root)
    assert ds.categories == ["my_gizmo", "my_tile"]
    cfg = small_cfg()
    # my_tile is a target (zero-shot): its real anomalies are not measured; my_gizmo's are
    new, kb, fallbacks = prepare_knowledge(cfg, ds, ds.categories, ["my_tile"], tmp_path)
    got = {f"{f.category}/{f.defect}": (f.source, f.anomalies) for f in fallbacks}
    assert got == {"my_gizmo/blemish": ("derived", 6), "my_gizmo/fracture": ("derived", 6),
                   "my_gizmo/scuff_line": ("derived", 6), "my_tile/hairline_crack": ("name_only", 0),
                   "my_tile/pinhole": ("name_only", 0), "my_tile/zorp": ("name_only", 0)}
    assert new.tools.knowledge.extra == [str(tmp_path / DERIVED_FILE)] and cfg.tools.knowledge.extra == []
    assert kb.get("my_tile", "hairline_crack").shape == "crack" and kb.get("my_tile", "pinhole").shape == "hole"
    assert kb.get("my_gizmo", "fracture").shape == "crack"  # line-shaped masks and a line word in the name
    assert kb.get("my_gizmo", "scuff_line").shape == "scratch" and kb.get("my_gizmo", "blemish").kind == "object"
    log = capsys.readouterr().out
    assert "knowledge: my_tile/zorp has no entry; from the name only (target category, " \
           "tools.knowledge.derive_from_target=false)" in log
    assert "knowledge: my_gizmo/fracture has no entry; derived from 6 real anomalies: " in log
    cfg.tools.knowledge.on_unknown = "error"
    with pytest.raises(KnowledgeError) as e:
        prepare_knowledge(cfg, ds, ["my_tile"], ["my_tile"], tmp_path / "x")
    assert str(e.value).count("\n") == 2 and "no knowledge entry for my_tile/zorp: add it with `anomalyagent knowledge add" in str(e.value)


def test_preflight_refuses_an_unknown_pair_fast_and_before_ray(own_root, tmp_path):
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path / "ray"), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "synthesize", "--out", str(tmp_path / "gen"),
                           "--data", str(own_root), "--categories", "my_tile", "tools.knowledge.on_unknown=error"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [ln.split(": ")[2].removeprefix("no knowledge entry for ") for ln in lines] == \
        ["my_tile/hairline_crack", "my_tile/pinhole", "my_tile/zorp"]
    assert all(ln.startswith("anomalyagent: knowledge error: ") for ln in lines) and "Traceback" not in proc.stderr
    assert elapsed < 5.0, elapsed
    assert not (tmp_path / "ray").exists()  # no Ray session was started


@pytest.mark.slow
@pytest.mark.ray
def test_synthesize_and_bench_mvtec_on_categories_of_our_own(ray_local, own_root, tiny_models, tmp_path, capsys):
    import ray

    from benchmarks.baselines import PipelineEngine
    from benchmarks.mvtec import run_mvtec_bench
    from cluster.synthesize_cmd import run_synthesize

    policy = str(tiny_models["text"])
    cfg = small_cfg(**{"episode.max_turns": 6, "episode.max_turn_tokens": 120, "synthesize.per_defect": 2,
                       "synthesize.max_attempts": 2, "synthesize.policy": policy,
                       "tools.knowledge.derive_from_target": True})
    engine = ray.remote(PipelineEngine).options(num_cpus=0.1, max_concurrency=100).remote(policy, "pg", 1)
    gen = tmp_path / "gen"
    res = run_synthesize(cfg, str(own_root), gen, categories=sorted(OWN), engines=[engine])
    assert res["knowledge_fallbacks"] == {p: "derived" for p in PAIRS}
    log = capsys.readouterr().out
    assert all(f"knowledge: {p} has no entry; derived from " in log for p in PAIRS)
    assert res["samples"] == 12 and res["lost"] == 0 and res["by_knowledge"] == {"derived": 12}
    delivered = [json.loads(p.read_text()) for p in (gen / "samples").glob("*.json")]
    assert len(delivered) == 12 and all(m["knowledge"] == "derived" for m in delivered)
    assert res["delivered"] >= 9, res  # the tool chain passes the judge on derived knowledge (12 of 12 here)
    for cat in OWN:
        masks = sorted((gen / cat).glob("*/mask/*.png"))
        assert masks, cat
        for m in masks:
            mask = np.asarray(Image.open(m))
            image = np.asarray(Image.open(m.parent.parent / "image" / m.name))
            assert image.shape == (OWN_SIZE[1], OWN_SIZE[0], 3) and mask.shape == image.shape[:2] and mask.any()
    rows = pd.read_parquet(gen / "trajectories" / "episodes")
    assert set(rows.knowledge) == {"derived"} and set(rows.category) == set(OWN)

    out = tmp_path / "bench"
    bench = run_mvtec_bench(str(gen), str(own_root), out, sorted(OWN), epochs=1, quick=True, cfg=cfg.bench)
    rows = {r["category"]: r for r in bench["summary"]["rows"]}
    assert sorted(rows) == sorted(OWN)
    for r in rows.values():
        assert all(0 <= r[k] <= 100 for k in ("cls_accuracy", "image_auroc", "pixel_ap", "au_pro")), r
    assert (out / "table.md").is_file()
