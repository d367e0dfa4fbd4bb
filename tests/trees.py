"""Small dataset trees in the VisA and MVTec LOCO layouts, written by the tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _img(path: Path, size=(32, 32), value=128, mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def make_visa(root: Path, n_normal=4, types=("chip", "chip", "chip", "scratch", "scratch", "chip,scratch")) -> Path:
    """One object ``candle`` with normals and anomalies, the 1cls split CSV and a type table."""
    rows = ["object,split,label,image,mask"]
    table = ["image,label,mask"]
    for i in range(n_normal):
        rel = f"candle/Data/Images/Normal/{i:04d}.JPG"
        _img(root / rel)
        rows.append(f"candle,{'train' if i < n_normal // 2 else 'test'},normal,{rel},")
        table.append(f"{rel},normal,")
    for i, t in enumerate(types):
        rel, mrel = f"candle/Data/Images/Anomaly/{i:03d}.JPG", f"candle/Data/Masks/Anomaly/{i:03d}.png"
        _img(root / rel)
        _img(root / mrel, mode="L", value=255)
        rows.append(f"candle,test,anomaly,{rel},{mrel}")
        table.append(f'{rel},"{t}",{mrel}')
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    (root / "candle" / "image_anno.csv").write_text("\n".join(table) + "\n")
    return root


def make_loco(root: Path) -> Path:
    """``juice_bottle`` with train/validation normals and anomalies with 1–2 masks each."""
    cat = root / "juice_bottle"
    for i in range(3):
        _img(cat / "train" / "good" / f"{i:03d}.png")
        _img(cat / "validation" / "good" / f"{i:03d}.png")
        _img(cat / "test" / "good" / f"{i:03d}.png")
    for t, n_masks in (("logical_anomalies", 2), ("structural_anomalies", 1)):
        for i in range(3):
            _img(cat / "test" / t / f"{i:03d}.png")
            for k in range(n_masks):
                _img(cat / "ground_truth" / t / f"{i:03d}" / f"{k:03d}.png", mode="L", value=255)
    return root
