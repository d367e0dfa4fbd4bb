"""What makes a ``bench mvtec`` run auditable: its inputs checked before anything is written
(one line per problem), and ``protocol.json`` beside ``table.md`` — the exact file lists,
seeds, package versions, the weights found (with sha256), the recipe and every departure
from the published scripts in force."""
from __future__ import annotations

import os
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.config import MVTecBenchConfig
from policy.checkpoint import sha256_file
from rollout.atomic import write_json_atomic
from rollout.data.types import DatasetError, image_size, list_images

PACKAGES = ("torch", "torchvision", "lpips", "torch-fidelity", "numpy", "pillow", "opencv-python-headless")


def generated_types(generated_root: Path, category: str) -> List[str]:
    base = generated_root / category
    return sorted(p.name for p in base.iterdir() if (p / "image").is_dir()) if base.is_dir() else []


def check_generated_root(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"generated folder not found: {root} (expected the output of `anomalyagent synthesize`: "
                           f"{root}/<category>/<defect>/image/NNN.png and .../mask/NNN.png)")


def check_inputs(generated: str | Path, ds, categories: Sequence[str], allow_missing_types: bool = False) -> None:
    """Every problem with the generated folder, as one ``DatasetError`` line, before any
    work: a missing folder or category, a defect type of the real test set with no
    generated images (unless ``allow_missing_types``: the agent ablation scores a row that
    delivered none of a type, that type counting as misclassified), an image without its
    mask, a mask of another size."""
    root = Path(generated)
    check_generated_root(root)
    for cat in categories:
        types = generated_types(root, cat)
        if not types:
            raise DatasetError(f"no generated images for category {cat!r}: expected {root / cat}/<defect>/image/NNN.png")
        missing = [d for d in ds.defect_types(cat) if d not in types]
        if missing and not allow_missing_types:
            raise DatasetError(f"generated {root / cat} has no {missing[0]!r} images (expected {root / cat / missing[0]}"
                               f"/image/NNN.png): the classifier is tested on every defect type of the real test set")
        for d in types:
            files = list_images(root / cat / d / "image")
            if not files:
                raise DatasetError(f"generated {root / cat / d / 'image'} holds no images")
            for f in files:
                mask = root / cat / d / "mask" / f"{f.stem}.png"
                if not mask.is_file():
                    raise DatasetError(f"generated image {f} has no mask: expected {mask}")
                for p in (f, mask):
                    _check_decodes(p)
                if image_size(mask) != image_size(f):
                    w, h = image_size(f)
                    mw, mh = image_size(mask)
                    raise DatasetError(f"generated mask {mask} is {mw}x{mh} but its image {f} is {w}x{h}")


def _check_decodes(path: Path) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()  # reads the whole file and its checksums without decoding it
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"generated file {path} is damaged ({type(e).__name__}): re-run `anomalyagent synthesize` "
                           "on this folder to make it again") from None


def _weights(path: Optional[Path], what: str) -> Dict[str, Any]:
    if path is None or not Path(path).is_file():
        return {"what": what, "found": False, "path": str(path) if path else None}
    return {"what": what, "found": True, "path": str(path), "sha256": sha256_file(Path(path))}


def weights_found(cfg: MVTecBenchConfig) -> Dict[str, Any]:
    from benchmarks.classify import RESNET34_FILE
    from benchmarks.ic_lpips import VGG_FILE
    from benchmarks.inception import cached_weights

    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    inception = Path(cfg.inception_weights) if cfg.inception_weights else cached_weights()
    resnet = Path(cfg.resnet34_weights) if cfg.resnet34_weights else home / RESNET34_FILE
    return {"inception": _weights(inception, "IS: torch-fidelity Inception-v3"),
            "resnet34": _weights(resnet, "classifier: torchvision ImageNet ResNet-34"),
            "vgg16": _weights(home / VGG_FILE, "IC-LPIPS: torchvision VGG16 backbone")}


def departures(cfg: MVTecBenchConfig, quick: bool) -> List[str]:
    """Every way this run differs from the published scripts (AnomalyDiffusion's
    train/test scripts, AnomalyAgent's evaluation)."""
    out = ["model selection on a validation split of the training data, not on the test set"
           + (" (test-selected numbers also reported, labelled)" if cfg.test_selected else "")]
    if cfg.recipe != "reference":
        out += ["classifier recipe 'ours': ImageNet normalization, flips, AdamW, one pass per epoch",
                "ground truth at evaluation: NEAREST-resized masks >= 0.5 for pixels and regions",
                "exact AU-PRO and pixel F1-max only (no binned values)"]
    else:
        out += ["exact AU-PRO and pixel F1-max reported beside the binned ones"]
    if cfg.max_generated_per_type != 500:
        out.append(f"classification and detection read the first {cfg.max_generated_per_type} per type (reference: 500)")
    if quick:
        out.append("--quick: small images, few epochs, tiny detector; a smoke run, not comparable")
    return out


def file_lists(ds, categories: Sequence[str], generated_root: Path, cap: int) -> Dict[str, Any]:
    from rollout.data.splits import dataset_split

    out: Dict[str, Any] = {}
    for cat in categories:
        split = dataset_split(ds, cat)
        gen = {d: [f.name for f in list_images(generated_root / cat / d / "image")] for d in generated_types(generated_root, cat)}
        out[cat] = {
            "centres": {d: [str(s.image) for s in split.defects[d].centres] for d in sorted(split.defects)},
            "test": [str(s.image) for s in split.test_samples()],
            "train_good": [str(s.image) for s in ds.train(cat)],
            "generated_all": gen,  # IS and IC-LPIPS
            "generated_used": {d: files[:cap] for d, files in gen.items()},  # classification and detection
        }
    return out


def write_protocol(out: Path, cfg: MVTecBenchConfig, quick: bool, generated: Path, data: str, ds,
                   categories: Sequence[str]) -> Path:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    protocol = {
        "generated": str(generated), "data": str(data), "quick": quick, "config": asdict(cfg),
        "recipe": cfg.recipe, "departures": departures(cfg, quick), "seeds": {"bench": cfg.seed},
        "python": platform.python_version(), "packages": versions, "weights": weights_found(cfg),
        "files": file_lists(ds, categories, Path(generated), cfg.max_generated_per_type),
    }
    path = out / "protocol.json"
    write_json_atomic(path, protocol)
    return path
