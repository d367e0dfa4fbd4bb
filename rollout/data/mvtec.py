"""MVTec AD (and any dataset in its layout, like our synthetic one).

Layout: ``<cat>/train/good/NNN.png``, ``<cat>/test/<defect>/NNN.png``,
``<cat>/ground_truth/<defect>/NNN_mask.png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from rollout.data.types import (
    GOOD,
    DatasetError,
    Sample,
    check_masks,
    list_images,
    require_root,
    unknown_category,
)


class MVTecAD:
    name = "mvtec"

    def __init__(self, root: str | Path, categories: Optional[Sequence[str]] = None, verify: bool = True):
        self.root = require_root(Path(root), "MVTec AD")
        found = sorted(p.name for p in self.root.iterdir() if (p / "train" / GOOD).is_dir())
        if not found:
            raise DatasetError(f"{self.root} does not look like an MVTec AD root: no <category>/train/good folder")
        for c in categories or ():
            if c not in found:
                raise unknown_category(c, self.root, found)
        self.categories: List[str] = list(categories) if categories else found
        self._test: Dict[str, List[Sample]] = {}
        if verify:
            for c in self.categories:
                check_masks(self.test(c))

    def _cat_dir(self, category: str) -> Path:
        if category not in self.categories:
            raise unknown_category(category, self.root, self.categories)
        return self.root / category

    def train(self, category: str) -> List[Sample]:
        folder = self._cat_dir(category) / "train" / GOOD
        return [Sample(p, category, GOOD, "train") for p in list_images(folder)]

    def defect_types(self, category: str) -> List[str]:
        test = self._cat_dir(category) / "test"
        return sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != GOOD) if test.is_dir() else []

    def test(self, category: str) -> List[Sample]:
        if category not in self._test:
            cat_dir = self._cat_dir(category)
            test_dir = cat_dir / "test"
            if not test_dir.is_dir():
                raise DatasetError(f"missing test folder for category {category!r}: {test_dir}")
            out: List[Sample] = [Sample(p, category, GOOD, "test") for p in list_images(test_dir / GOOD)]
            for defect in self.defect_types(category):
                for p in list_images(test_dir / defect):
                    mask = cat_dir / "ground_truth" / defect / f"{p.stem}_mask.png"
                    out.append(Sample(p, category, defect, "test", (mask,)))
            self._test[category] = out
        return self._test[category]

    def anomalies(self, category: str) -> List[Sample]:
        return [s for s in self.test(category) if s.is_anomaly]
