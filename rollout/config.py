"""Configuration of datasets and (later) episodes and rollouts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class SyntheticDataConfig:
    """The generated MVTec-layout dataset used when no real root is configured."""

    size: int = 96  # image side in pixels
    n_train: int = 8  # train/good images per category
    n_test_good: int = 4  # test/good images per category
    n_test_per_defect: int = 6  # anomalies per defect type
    categories: List[str] = field(
        default_factory=lambda: ["syn_weave", "syn_washer", "syn_marble", "syn_pill"]
    )


@dataclass
class DataConfig:
    """Where images come from.

    ``root`` empty means: build the synthetic dataset in the cache folder.
    ``source_categories`` build training trajectories (VisA in a real run);
    ``target_categories`` are evaluation only (MVTec-AD in a real run).
    """

    format: str = "mvtec"  # mvtec | visa | loco
    root: Optional[str] = None
    source_categories: List[str] = field(default_factory=lambda: ["syn_weave", "syn_washer"])
    target_categories: List[str] = field(default_factory=lambda: ["syn_marble", "syn_pill"])
    visa_type_table: Optional[str] = None  # CSV image,defect for VisA per-defect-type split
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
