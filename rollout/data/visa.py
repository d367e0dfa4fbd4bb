"""VisA: its standard split (``split_csv/1cls.csv``) and, given a type table, defect types.

Layout: ``<obj>/Data/Images/{Normal,Anomaly}/*.JPG``, ``<obj>/Data/Masks/Anomaly/*.png`` and
``split_csv/1cls.csv`` with columns ``object,split,label,image,mask`` (paths relative to
the root). VisA's split has no defect types; a type table (CSV with ``image`` and
``defect`` — or VisA's own ``image_anno.csv`` with ``image`` and ``label``) names them so
the per-defect-type ⌊N/3⌋ split can be made. An image with several types in the table
becomes ``combined``, as MVTec AD names such images.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from rollout.data.types import GOOD, DatasetError, Sample, check_masks, require_root, unknown_category

SPLIT_CSV = Path("split_csv") / "1cls.csv"


def _norm_type(label: str) -> str:
    parts = [p.strip().lower().replace(" ", "_") for p in label.split(",") if p.strip()]
    if not parts or parts == ["normal"]:
        return GOOD
    return parts[0] if len(parts) == 1 else "combined"


def read_type_table(path: str | Path) -> Dict[str, str]:
    """Image file name (stem) → defect type."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"VisA type table not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "image" not in rows[0] or not ({"defect", "label"} & set(rows[0])):
        raise DatasetError(f"VisA type table {path} needs columns 'image' and 'defect' (or 'label')")
    col = "defect" if "defect" in rows[0] else "label"
    return {Path(r["image"]).stem: _norm_type(r[col]) for r in rows}


class VisA:
    name = "visa"

    def __init__(
        self,
        root: str | Path,
        categories: Optional[Sequence[str]] = None,
        type_table: Optional[str | Path] = None,
        verify: bool = True,
    ):
        self.root = require_root(Path(root), "VisA")
        csv_path = self.root / SPLIT_CSV
        if not csv_path.is_file():
            raise DatasetError(f"{self.root} does not look like a VisA root: missing {SPLIT_CSV}")
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = {"object", "split", "label", "image", "mask"} - set(rows[0] if rows else ())
        if missing:
            raise DatasetError(f"{csv_path} lacks columns {sorted(missing)}")
        found = sorted({r["object"] for r in rows})
        for c in categories or ():
            if c not in found:
                raise unknown_category(c, self.root, found)
        self.categories: List[str] = list(categories) if categories else found
        self.types = read_type_table(type_table) if type_table else None
        self._rows: Dict[str, List[dict]] = {c: [] for c in self.categories}
        for r in rows:
            if r["object"] in self._rows:
                self._rows[r["object"]].append(r)
        if verify:
            for c in self.categories:
                check_masks(self.test(c))

    def _samples(self, category: str, split: str) -> List[Sample]:
        if category not in self._rows:
            raise unknown_category(category, self.root, self.categories)
        out = []
        for r in self._rows[category]:
            if r["split"] != split:
                continue
            image = self.root / r["image"]
            if r["label"] == "normal":
                out.append(Sample(image, category, GOOD, split))
                continue
            defect = "anomaly"
            if self.types is not None:
                defect = self.types.get(image.stem)
                if defect is None:
                    raise DatasetError(f"type table has no entry for anomaly image {image}")
            mask = (self.root / r["mask"],) if r["mask"] else ()
            out.append(Sample(image, category, defect, split, mask))
        return out

    def train(self, category: str) -> List[Sample]:
        return self._samples(category, "train")

    def test(self, category: str) -> List[Sample]:
        return self._samples(category, "test")

    def anomalies(self, category: str) -> List[Sample]:
        """Every anomaly image of a category, whichever standard split holds it."""
        return [s for s in self.train(category) + self.test(category) if s.is_anomaly]

    def defect_types(self, category: str) -> List[str]:
        return sorted({s.defect for s in self.anomalies(category)})
