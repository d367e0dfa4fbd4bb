"""Dataset loaders (MVTec AD, VisA, MVTec LOCO), the few-shot split and the synthetic set."""
from __future__ import annotations

from typing import Optional, Sequence

from rollout.data.loco import MVTecLOCO
from rollout.data.mvtec import MVTecAD
from rollout.data.types import DatasetError, Sample
from rollout.data.visa import VisA


def open_dataset(fmt: str, root, categories: Optional[Sequence[str]] = None, type_table: Optional[str] = None):
    """A loader by format name; errors name the root, category or file at fault."""
    if fmt == "mvtec":
        return MVTecAD(root, categories)
    if fmt == "loco":
        return MVTecLOCO(root, categories)
    if fmt == "visa":
        return VisA(root, categories, type_table=type_table)
    raise DatasetError(f"unknown dataset format {fmt!r}; known: mvtec, visa, loco")


__all__ = ["open_dataset", "MVTecAD", "MVTecLOCO", "VisA", "DatasetError", "Sample"]
