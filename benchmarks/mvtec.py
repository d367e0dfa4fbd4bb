"""``anomalyagent bench mvtec``: Tables 1–3 of design.md §6 from a generated folder and a
real dataset, per category, resumable (one JSON per finished category).

Per category: IS per defect-type folder (then mean), IC-LPIPS per type against the first
⌊N/3⌋ real anomalies (both small-cluster variants), ResNet-34 type classification, and
DRAEM-style detection/localization. Then the means, the markdown table beside the
published rows, a CSV and the plots (``benchmarks.mvtec_report``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from benchmarks.config import QUICK, MVTecBenchConfig
from benchmarks.protocol import check_generated_root, check_inputs, generated_types, write_protocol
from rollout.data.types import DatasetError
from rollout.atomic import write_json_atomic


def bench_category(ds, category: str, generated_root: Path, cfg: MVTecBenchConfig, lp, inception,
                   bar: Optional[tqdm] = None) -> Dict[str, Any]:
    from benchmarks.classify import classify_category
    from benchmarks.data import load_generated, load_rgb, real_test
    from benchmarks.detect import detect_category
    from benchmarks.ic_lpips import ic_lpips
    from benchmarks.inception import inception_score
    from rollout.data.splits import dataset_split

    def stage(name: str) -> None:
        if bar is not None:
            bar.set_postfix(category=category, stage=name)

    t0 = time.perf_counter()
    size = cfg.image_size
    split = dataset_split(ds, category)
    gen = load_generated(generated_root, category, size)
    stage("IS")
    is_per_type = {d: inception_score(gen.images[d], inception, cfg.is_splits) for d in gen.defects}
    stage("IC-LPIPS")
    ic_per_type = {}
    for d in gen.defects:
        centres = [load_rgb(s.image, size) for s in split.defects[d].centres] if d in split.defects else []
        if centres:
            r = ic_lpips(gen.images[d], centres, lp.pairwise, cfg.ic_max_members, cfg.seed)
            ic_per_type[d] = {k: r[k] for k in ("dropped", "zero", "cluster_sizes")}
    test_images, test_masks, test_regions, test_labels = real_test(
        split, size, "reference" if cfg.recipe == "reference" else "nearest")
    stage("classification")
    anomalies = [(im, lab) for im, lab in zip(test_images, test_labels) if lab != "good"]
    capped = gen.first(cfg.max_generated_per_type)
    cls = classify_category(capped, [a[0] for a in anomalies], [a[1] for a in anomalies], cfg.cls_epochs, cfg.cls_lr,
                            cfg.cls_batch_size, cfg.resnet34_weights, cfg.seed, val_fraction=cfg.val_fraction,
                            recipe=cfg.recipe)
    stage("detection")
    normals = [load_rgb(s.image, size) for s in ds.train(category)]
    det = detect_category(normals, capped, test_images, test_masks, [lab != "good" for lab in test_labels],
                          cfg.det_epochs, cfg.det_lr, cfg.det_batch_size, cfg.det_base_channels, cfg.val_fraction,
                          cfg.seed, cfg.test_selected, recipe=cfg.recipe, samples_per_epoch=cfg.det_samples_per_epoch,
                          test_regions=test_regions)
    kept = [v["dropped"] for v in ic_per_type.values() if not np.isnan(v["dropped"])]
    return {
        "category": category, "defect_types": gen.defects, "generated": {d: len(v) for d, v in gen.images.items()},
        "generated_trained_on": {d: len(v) for d, v in capped.images.items()},
        "is": float(np.mean(list(is_per_type.values()))), "is_per_type": is_per_type,
        "ic_lpips_dropped": float(np.mean(kept)) if kept else float("nan"),
        "ic_lpips_zero": float(np.mean([v["zero"] for v in ic_per_type.values()])) if ic_per_type else float("nan"),
        "ic_lpips_per_type": ic_per_type, "classification": cls, "detection": det,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def iclpips_check(lp, images: List[np.ndarray]) -> Dict[str, float]:
    """Batched pairwise LPIPS against the per-pair loop on the same images: equal, and how much faster."""
    t0 = time.perf_counter()
    batched = lp.pairwise(images)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = lp.pair_loop(images)
    t_loop = time.perf_counter() - t0
    diff = float(np.abs(batched - loop).max())
    if diff > 1e-5:
        raise AssertionError(f"batched LPIPS differs from the per-pair loop by {diff:g}")
    return {"images": len(images), "pairs": len(images) * (len(images) - 1) // 2, "max_abs_diff": diff,
            "batched_s": round(t_batched, 3), "loop_s": round(t_loop, 3), "speedup": round(t_loop / t_batched, 2)}


def run_mvtec_bench(generated: str, data: str, out: Path, categories: Optional[List[str]] = None,
                    epochs: Optional[int] = None, quick: bool = False, cfg: Optional[MVTecBenchConfig] = None,
                    data_format: str = "mvtec", allow_missing_types: bool = False) -> Dict[str, Any]:
    from benchmarks.ic_lpips import BatchedLPIPS
    from benchmarks.inception import load_inception
    from benchmarks.mvtec_report import write_report
    from rollout.data import open_dataset

    cfg = cfg or MVTecBenchConfig()
    if quick:
        cfg = replace(cfg, **QUICK)
    if epochs is not None:
        cfg = replace(cfg, cls_epochs=epochs, det_epochs=epochs)
    generated_root = Path(generated)
    check_generated_root(generated_root)
    cats = categories or sorted(p.name for p in generated_root.iterdir() if generated_types(generated_root, p.name))
    if not cats:
        raise DatasetError(f"generated folder {generated_root} has no <category>/<defect>/image folders")
    ds = open_dataset(data_format, data, cats)
    check_inputs(generated_root, ds, cats, allow_missing_types)  # everything checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    (out / "categories").mkdir(exist_ok=True)
    write_json_atomic(out / "config.json", {**asdict(cfg), "quick": quick, "generated": str(generated), "data": str(data)})
    write_protocol(out, cfg, quick, generated_root, data, ds, cats)
    lp = BatchedLPIPS(seed=cfg.seed)
    inception, is_label = load_inception(cfg.inception_weights, out / "scratch")
    results = {}
    bar = tqdm(cats, desc="bench mvtec", unit="category")
    for cat in bar:
        path = out / "categories" / f"{cat}.json"
        if path.is_file():
            results[cat] = json.loads(path.read_text())
            continue
        results[cat] = bench_category(ds, cat, generated_root, cfg, lp, inception, bar)
        write_json_atomic(path, results[cat])
    bar.close()
    from benchmarks.data import load_generated

    first = load_generated(generated_root, cats[0], cfg.image_size)
    check_images = [im for d in first.defects for im in first.images[d]][: cfg.iclpips_check_images]
    check = iclpips_check(lp, check_images)
    labels = {"is": is_label, "lpips": lp.label, "recipe": cfg.recipe,
              "classifier_init": sorted({r["classification"]["init"] for r in results.values()})}
    summary = write_report(out, results, labels, check, quick)
    return {"out": str(out), "summary": summary, "iclpips": check, "labels": labels}
