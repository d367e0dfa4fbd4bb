"""Published reference rows for the MVTec-AD tables (design.md §1).

Only numbers stated in design.md are listed; the paper's baseline rows (DFMGAN,
AnomalyDiffusion, ...) belong here too, copied from the paper by whoever has it at hand —
we do not quote numbers from memory.
"""
from __future__ import annotations

from typing import Dict, List

COLUMNS = ["is", "ic_lpips", "cls_accuracy", "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
           "pixel_f1_max", "au_pro"]
HEADERS = {"is": "IS", "ic_lpips": "IC-LPIPS", "cls_accuracy": "Cls acc %", "image_auroc": "I-AUROC",
           "image_ap": "I-AP", "image_f1_max": "I-F1max", "pixel_auroc": "P-AUROC", "pixel_ap": "P-AP",
           "pixel_f1_max": "P-F1max", "au_pro": "AU-PRO"}
PUBLISHED: List[Dict[str, object]] = [
    {"name": "AnomalyAgent (published, MVTec-AD, zero-shot)", "is": 2.10, "ic_lpips": 0.33, "cls_accuracy": 57.0,
     "image_auroc": 98.5, "image_ap": 99.3, "pixel_auroc": 98.0, "pixel_ap": 74.2, "pixel_f1_max": 70.3},
]
