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


# the user's own categories, unknown to the knowledge base, built from the synthetic ones
OWN = {"my_tile": ("syn_marble", {"crack": "hairline_crack", "hole": "pinhole", "stain": "zorp"}),
       "my_gizmo": ("syn_pill", {"crack": "fracture", "scratch": "scuff_line", "stain": "blemish"})}
OWN_SIZE = (96, 80)  # width, height: not square


def _grey(src: Path, dst: Path, sixteen: bool = False, jpeg: bool = False) -> Path:
    """``src`` as grayscale, cropped to ``OWN_SIZE``; 16-bit PNG or JPEG when asked."""
    with Image.open(src) as im:
        g = np.asarray(im.convert("L").crop((0, 0) + OWN_SIZE))
    dst.parent.mkdir(parents=True, exist_ok=True)
    if jpeg:
        dst = dst.with_suffix(".jpg")
        Image.fromarray(g).save(dst, quality=95)
    elif sixteen:
        Image.fromarray(g.astype(np.uint16) * 257).save(dst)
    else:
        Image.fromarray(g).save(dst)
    return dst


def make_own_categories(root: Path, syn_root: Path) -> Path:
    """Two categories the knowledge base does not hold (a texture and an object) in the MVTec
    layout, with defect names of their own: grayscale, non-square images; the object's
    normals are 16-bit PNGs and its test anomalies JPEGs."""
    for cat, (src_cat, renames) in OWN.items():
        src, dst = syn_root / src_cat, root / cat
        obj = cat == "my_gizmo"
        for split in ("train", "test"):
            for p in sorted((src / split / "good").glob("*.png")):
                _grey(p, dst / split / "good" / p.name, sixteen=obj)
        for old, new in renames.items():
            for p in sorted((src / "test" / old).glob("*.png")):
                _grey(p, dst / "test" / new / p.name, jpeg=obj)
                _grey(src / "ground_truth" / old / f"{p.stem}_mask.png", dst / "ground_truth" / new / f"{p.stem}_mask.png")
    return root
