"""The per-defect-type few-shot split of design.md §6, written out so a run can be audited.

For each defect type: sort ``test/<defect>/`` by number, ``l = N // 3``; the first ``l``
images are the cluster-centre (few-shot) set, the rest plus all ``test/good`` are the test set.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from rollout.data.types import GOOD, Sample, number_key


@dataclass(frozen=True)
class DefectSplit:
    category: str
    defect: str
    centres: List[Sample]
    test: List[Sample]


@dataclass(frozen=True)
class CategorySplit:
    category: str
    defects: Dict[str, DefectSplit]
    test_good: List[Sample]

    def test_samples(self) -> List[Sample]:
        """The evaluation set: all normals plus the non-centre anomalies of every type."""
        out = list(self.test_good)
        for d in sorted(self.defects):
            out.extend(self.defects[d].test)
        return out


def split_category(category: str, samples: Sequence[Sample]) -> CategorySplit:
    by_defect: Dict[str, List[Sample]] = {}
    good: List[Sample] = []
    for s in samples:
        (good if s.defect == GOOD else by_defect.setdefault(s.defect, [])).append(s)
    defects = {}
    for d, items in sorted(by_defect.items()):
        items = sorted(items, key=lambda s: number_key(s.image))
        l = len(items) // 3
        defects[d] = DefectSplit(category, d, items[:l], items[l:])
    return CategorySplit(category, defects, sorted(good, key=lambda s: number_key(s.image)))


def dataset_split(dataset, category: str) -> CategorySplit:
    """Split one category of any loader: its test normals plus every anomaly it holds."""
    good = [s for s in dataset.test(category) if not s.is_anomaly]
    return split_category(category, good + dataset.anomalies(category))


def write_split_lists(split: CategorySplit, out_dir: str | Path) -> Path:
    """``<out>/<cat>/<defect>/{centres,test}.txt``, ``<out>/<cat>/test_good.txt`` and a summary."""
    base = Path(out_dir) / split.category
    summary = {"category": split.category, "test_good": len(split.test_good), "defects": {}}
    for d, ds in split.defects.items():
        folder = base / d
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "centres.txt").write_text("".join(f"{s.image}\n" for s in ds.centres))
        (folder / "test.txt").write_text("".join(f"{s.image}\n" for s in ds.test))
        summary["defects"][d] = {"centres": len(ds.centres), "test": len(ds.test)}
    base.mkdir(parents=True, exist_ok=True)
    (base / "test_good.txt").write_text("".join(f"{s.image}\n" for s in split.test_good))
    (base / "split.json").write_text(json.dumps(summary, indent=1))
    return base
