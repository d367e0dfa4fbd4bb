"""Configuration of the MVTec-AD benchmarks (design.md §6). ``QUICK`` is the CPU preset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class MVTecBenchConfig:
    image_size: int = 256
    inception_weights: Optional[str] = None  # torch-fidelity Inception file; else its cache; else random init
    resnet34_weights: Optional[str] = None  # torchvision ImageNet file; else TORCH_HOME cache; else random init
    is_splits: int = 10
    ic_max_members: int = 50
    recipe: str = "reference"  # "reference": the published scripts' classifier and detector training, ground truth and
    # binned metrics; "ours": benchmarks/classify.py's recipe, the detector over every image per epoch, exact metrics
    cls_epochs: int = 30
    cls_lr: float = 1.0e-4
    cls_batch_size: int = 8
    det_epochs: int = 200
    det_samples_per_epoch: int = 500  # reference recipe: samples drawn per epoch (a normal or a generated one, ½ each)
    det_lr: float = 1.0e-4
    det_batch_size: int = 8
    det_base_channels: int = 64
    val_fraction: float = 0.2  # carved from the generated/normal training data for model selection
    test_selected: bool = False  # also report the epoch with the best test score (labelled)
    max_generated_per_type: int = 500  # classification and detection read the first N per type (IS, IC-LPIPS: all)
    iclpips_check_images: int = 12  # images for the batched-vs-loop IC-LPIPS check
    seed: int = 0


QUICK = {"image_size": 64, "cls_epochs": 5, "cls_batch_size": 8, "det_epochs": 4, "det_base_channels": 8,
         "det_batch_size": 8, "det_samples_per_epoch": 48, "iclpips_check_images": 8}
