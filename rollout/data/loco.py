"""MVTec LOCO AD: several masks per anomaly image.

Layout: ``<cat>/{train,validation}/good/NNN.png``, ``<cat>/test/<type>/NNN.png`` with
``<cat>/ground_truth/<type>/NNN/000.png, 001.png, ...`` (one file per annotated region).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from rollout.data.mvtec import MVTecAD
from rollout.data.types import GOOD, Sample, list_images


class MVTecLOCO(MVTecAD):
    name = "loco"

    def __init__(self, root: str | Path, categories: Optional[Sequence[str]] = None, verify: bool = True):
        super().__init__(root, categories, verify)

    def validation(self, category: str) -> List[Sample]:
        folder = self._cat_dir(category) / "validation" / GOOD
        return [Sample(p, category, GOOD, "validation") for p in list_images(folder)]

    def test(self, category: str) -> List[Sample]:
        if category not in self._test:
            cat_dir = self._cat_dir(category)
            out: List[Sample] = [Sample(p, category, GOOD, "test") for p in list_images(cat_dir / "test" / GOOD)]
            for defect in self.defect_types(category):
                for p in list_images(cat_dir / "test" / defect):
                    masks = tuple(list_images(cat_dir / "ground_truth" / defect / p.stem))
                    out.append(Sample(p, category, defect, "test", masks))
            self._test[category] = out
        return self._test[category]
