"""What the MVTec benchmarks read: the generated folder (``anomalyagent synthesize``'s
layout) and the real dataset's split, as arrays at the benchmark's image size."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from rollout.data.images import image_to_gray8, read_rgb
from rollout.data.types import DatasetError, list_images


def load_rgb(path: Path, size: int) -> np.ndarray:
    """RGB at size x size (grayscale, 16-bit and non-square images as rollout.data.images reads them)."""
    return np.asarray(Image.fromarray(read_rgb(path)).resize((size, size), Image.BILINEAR))


def load_mask(path: Path, size: int) -> np.ndarray:
    """Binary mask (masks binarized at 0.5 of their range, as the protocol says)."""
    with Image.open(path) as im:
        m = np.asarray(Image.fromarray(image_to_gray8(im)).resize((size, size), Image.NEAREST), dtype=np.float32) / 255.0
    return (m >= 0.5).astype(np.uint8)


@dataclass
class GeneratedSet:
    """Per defect type: images and masks of one category."""

    category: str
    images: Dict[str, List[np.ndarray]]
    masks: Dict[str, List[np.ndarray]]

    @property
    def defects(self) -> List[str]:
        return sorted(self.images)

    def first(self, n: int) -> "GeneratedSet":
        """The first ``n`` of each type, in file-number order (the published scripts train the
        classifier and the detector on min(N, 500) and score IS and IC-LPIPS on all)."""
        return GeneratedSet(self.category, {d: v[:n] for d, v in self.images.items()},
                            {d: v[:n] for d, v in self.masks.items()})


def load_generated(root: Path, category: str, size: int) -> GeneratedSet:
    base = Path(root) / category
    if not base.is_dir():
        raise DatasetError(f"no generated images for category {category!r} under {root} (expected "
                           f"{base}/<defect>/image/NNN.png — run `anomalyagent synthesize`)")
    images: Dict[str, List[np.ndarray]] = {}
    masks: Dict[str, List[np.ndarray]] = {}
    for d in sorted(p.name for p in base.iterdir() if (p / "image").is_dir()):
        files = list_images(base / d / "image")
        missing = [f.name for f in files if not (base / d / "mask" / f.name).is_file()]
        if missing:
            raise DatasetError(f"generated {category}/{d}: no mask for {missing[:3]}")
        images[d] = [load_rgb(f, size) for f in files]
        masks[d] = [load_mask(base / d / "mask" / f.name, size) for f in files]
    if not images:
        raise DatasetError(f"generated {base} has no <defect>/image folders")
    return GeneratedSet(category, images, masks)


def load_mask_bilinear(path: Path, size: int) -> np.ndarray:
    """The mask resized bilinearly, 0..255 (uint8), as the published test script reads it."""
    with Image.open(path) as im:
        return np.asarray(Image.fromarray(image_to_gray8(im)).resize((size, size), Image.BILINEAR))


def real_test(split, size: int, ground_truth: str = "reference"
              ) -> Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray], List[str]]:
    """The evaluation set (test/good + non-centre anomalies): images, pixel masks, region
    masks (for AU-PRO), defect labels. ``ground_truth="reference"`` follows the published
    test script: a pixel is positive only where the bilinear-resized mask is fully on (its
    uint8 cast), a PRO region is where it is above 0. ``"nearest"``: NEAREST-resized masks
    binarized at 0.5, for both."""
    if ground_truth not in ("reference", "nearest"):
        raise ValueError(f"ground_truth must be 'reference' or 'nearest', got {ground_truth!r}")
    images, pixels, regions, labels = [], [], [], []
    for s in split.test_samples():
        images.append(load_rgb(s.image, size))
        pix, reg = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
        for p in s.masks:
            if ground_truth == "reference":
                soft = load_mask_bilinear(p, size)
                pix |= (soft == 255).astype(np.uint8)
                reg |= (soft > 0).astype(np.uint8)
            else:
                pix |= load_mask(p, size)
                reg = pix
        pixels.append(pix)
        regions.append(reg)
        labels.append(s.defect)
    return images, pixels, regions, labels
