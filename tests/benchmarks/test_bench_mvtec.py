"""The MVTec benchmark: IC-LPIPS on constructed clusters, batched LPIPS = the per-pair
loop, IS through torch-fidelity's code with random weights, and ``bench mvtec --quick``
end to end on the synthetic dataset."""
import csv
import json
import shutil

import numpy as np
import pytest

from benchmarks.ic_lpips import BatchedLPIPS, ic_lpips
from benchmarks.inception import inception_score, load_inception
from cluster.cli import main


def stub(a, b=None):
    a = np.asarray(a, float)
    b = a if b is None else np.asarray(b, float)
    return np.abs(a[:, None] - b[None, :])


def test_ic_lpips_on_constructed_clusters():
    centres = [0.0, 10.0, 100.0]
    generated = [0.5, 1.5, 2.0, 9.0, 11.0, 50.0 + 60]  # clusters {0.5,1.5,2}, {9,11}, {110}
    r = ic_lpips(generated, centres, stub)
    assert r["cluster_sizes"] == [3, 2, 1]
    within0 = np.mean([1.0, 1.5, 0.5])
    assert r["per_cluster"] == [pytest.approx(within0), pytest.approx(2.0), None]
    assert r["dropped"] == pytest.approx((within0 + 2.0) / 2)
    assert r["zero"] == pytest.approx((within0 + 2.0 + 0.0) / 3)


def test_ic_lpips_caps_members_with_a_seeded_sample():
    generated = list(np.arange(200.0))
    a = ic_lpips(generated, [0.0], stub, max_members=50, seed=1)
    b = ic_lpips(generated, [0.0], stub, max_members=50, seed=1)
    c = ic_lpips(generated, [0.0], stub, max_members=50, seed=2)
    assert a["cluster_sizes"] == [200] and a["dropped"] == b["dropped"] != c["dropped"]


def test_batched_lpips_equals_the_per_pair_loop():
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(5)]
    b = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(3)]
    lp = BatchedLPIPS(batch_size=2)
    assert np.allclose(lp.pairwise(a), lp.pair_loop(a), atol=1e-6)
    assert np.allclose(lp.pairwise(a, b), lp.pair_loop(a, b), atol=1e-6)
    assert np.allclose(np.diag(lp.pairwise(a)), 0, atol=1e-9)


def test_inception_score_through_torch_fidelity_with_random_weights(tmp_path):
    extractor, label = load_inception(None, tmp_path)
    assert "random-init" in label and (tmp_path / "inception_random.pt").is_file()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(12)]
    s1 = inception_score(images, extractor, splits=10, batch_size=5)
    s2 = inception_score(images, extractor, splits=10, batch_size=12)
    assert s1 >= 1.0 and s1 == pytest.approx(s2, rel=1e-5)  # batching does not change the score


@pytest.fixture(scope="module")
def generated_copy(syn_root, tmp_path_factory):
    """A generated folder in synthesize's layout, made from the dataset's own anomalies."""
    out = tmp_path_factory.mktemp("gen")
    for cat in ("syn_marble", "syn_pill"):
        for d in sorted(p.name for p in (syn_root / cat / "test").iterdir() if p.name != "good"):
            (out / cat / d / "image").mkdir(parents=True)
            (out / cat / d / "mask").mkdir(parents=True)
            for k, img in enumerate(sorted((syn_root / cat / "test" / d).glob("*.png"))):
                shutil.copy(img, out / cat / d / "image" / f"{k:03d}.png")
                shutil.copy(syn_root / cat / "ground_truth" / d / f"{img.stem}_mask.png",
                            out / cat / d / "mask" / f"{k:03d}.png")
    return out


@pytest.mark.slow
def test_bench_mvtec_quick_end_to_end_and_resume(generated_copy, syn_root, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "mvtec", "--generated", str(generated_copy), "--data", str(syn_root), "--out", str(out), "--quick"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("iclpips_speedup=") and float(lines[-1].split("=")[1]) > 1
    for name in ("table.md", "results.csv", "per_category.png", "samples.png", "summary.json",
                 "categories/syn_marble.json", "categories/syn_pill.json"):
        assert (out / name).is_file(), name
    table = (out / "table.md").read_text()
    assert "| AnomalyAgent — zero-shot (trained on VisA), published |" in table and "**ours (this run)**" in table and "--quick" in table
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["category"] for r in rows] == ["syn_marble", "syn_pill", "mean"]
    for r in rows:
        assert 0 <= float(r["image_auroc"]) <= 100 and 0 <= float(r["au_pro"]) <= 100 and float(r["is"]) >= 1
    first = json.loads((out / "categories" / "syn_marble.json").read_text())
    assert first["classification"]["n_test"] > 0 and first["detection"]["selected_epoch"] >= 1
    assert "exact: AU-PRO" in table and "DFMGAN — few-shot, published" in table and "issue 97" in table
    assert first["detection"]["recipe"] == "reference" and "au_pro_exact" in first["detection"]
    protocol = json.loads((out / "protocol.json").read_text())
    for key in ("departures", "packages", "weights", "seeds", "recipe", "config", "files"):
        assert protocol[key], key
    assert set(protocol["packages"]) >= {"torch", "torchvision", "lpips", "torch-fidelity"}
    assert all(v["found"] is False or len(v["sha256"]) == 64 for v in protocol["weights"].values())
    files = protocol["files"]["syn_marble"]
    assert files["generated_used"]["crack"] == sorted(p.name for p in (generated_copy / "syn_marble" / "crack" / "image").iterdir())
    n_test = len(files["test"])
    assert n_test == first["classification"]["n_test"] + len(list((syn_root / "syn_marble" / "test" / "good").iterdir()))
    # resume: a finished category is read back, not recomputed
    stamp = (out / "categories" / "syn_marble.json").stat().st_mtime_ns
    assert main(args + ["--categories", "syn_marble"]) == 0
    assert (out / "categories" / "syn_marble.json").stat().st_mtime_ns == stamp
    # a second run on the same inputs, from scratch, reproduces IS and IC-LPIPS and the protocol
    again = tmp_path / "again"
    assert main(args[:-2] + [str(again), "--quick", "--categories", "syn_marble"]) == 0
    second = json.loads((again / "categories" / "syn_marble.json").read_text())
    assert abs(second["is"] - first["is"]) < 1e-6 and abs(second["ic_lpips_zero"] - first["ic_lpips_zero"]) < 1e-6
    assert json.loads((again / "protocol.json").read_text())["files"]["syn_marble"] == files


def _bad(tmp_path, capsys, generated, data, what):
    out = tmp_path / "never"
    rc = main(["bench", "mvtec", "--generated", str(generated), "--data", str(data), "--out", str(out), "--quick"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("anomalyagent: dataset error: ") and what in err[0], err
    assert not out.exists()  # nothing is written


def test_every_bad_path_gets_one_line_and_exit_2(generated_copy, syn_root, tmp_path, capsys):
    from PIL import Image

    _bad(tmp_path, capsys, tmp_path / "missing", syn_root, f"generated folder not found: {tmp_path / 'missing'}")
    _bad(tmp_path, capsys, generated_copy, tmp_path / "nodata", f"root not found: {tmp_path / 'nodata'}")
    gen = tmp_path / "gen"
    shutil.copytree(generated_copy, gen)
    shutil.rmtree(gen / "syn_pill" / "stain")
    _bad(tmp_path, capsys, gen, syn_root, f"generated {gen / 'syn_pill'} has no 'stain' images")
    shutil.copytree(generated_copy / "syn_pill" / "stain", gen / "syn_pill" / "stain")
    (gen / "syn_pill" / "crack" / "mask" / "001.png").unlink()
    _bad(tmp_path, capsys, gen, syn_root, f"generated image {gen / 'syn_pill' / 'crack' / 'image' / '001.png'} has no mask")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(gen / "syn_pill" / "crack" / "mask" / "001.png")
    _bad(tmp_path, capsys, gen, syn_root, "mask " + str(gen / "syn_pill" / "crack" / "mask" / "001.png") + " is 12x10 but")
    shutil.copy(generated_copy / "syn_pill" / "crack" / "mask" / "001.png", gen / "syn_pill" / "crack" / "mask" / "001.png")
    half = gen / "syn_pill" / "crack" / "image" / "002.png"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])  # a half-written PNG
    _bad(tmp_path, capsys, gen, syn_root, f"generated file {half} is damaged")
