"""Published MVTec-AD rows, printed beside ours, each with where it was read
(``../shared/published-numbers.md``; a missing column was not published or not found).

Settings differ: zero-shot rows generate for MVTec-AD without seeing its anomalies (the
AnomalyAgent paper's policy was trained on VisA); few-shot rows saw the first third of each
defect type. All use the AnomalyDiffusion split. Percentages as in the papers.
"""
from __future__ import annotations

from typing import Dict, List

COLUMNS = ["is", "ic_lpips", "cls_accuracy", "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
           "pixel_f1_max", "au_pro"]
HEADERS = {"is": "IS", "ic_lpips": "IC-LPIPS", "cls_accuracy": "Cls acc %", "image_auroc": "I-AUROC",
           "image_ap": "I-AP", "image_f1_max": "I-F1max", "pixel_auroc": "P-AUROC", "pixel_ap": "P-AP",
           "pixel_f1_max": "P-F1max", "au_pro": "AU-PRO"}

AGENT_PAPER = "AnomalyAgent paper (arXiv 2604.07900)"


def _row(name: str, setting: str, source: str, is_=None, ic=None, cls=None, pixel=(None, None, None),
         image=(None, None, None)) -> Dict[str, object]:
    return {"name": name, "setting": setting, "source": source, "is": is_, "ic_lpips": ic, "cls_accuracy": cls,
            "pixel_auroc": pixel[0], "pixel_ap": pixel[1], "pixel_f1_max": pixel[2],
            "image_auroc": image[0], "image_ap": image[1], "image_f1_max": image[2]}


PUBLISHED: List[Dict[str, object]] = [
    _row("AnomalyAgent", "zero-shot (trained on VisA)", f"{AGENT_PAPER}, Tabs. 1-3", 2.10, 0.33, 57.0,
         (98.0, 74.2, 70.3), (98.5, 99.3, 97.3)),
    _row("AnomalyHybrid", "zero-shot", f"{AGENT_PAPER} tables (arXiv 2504.04340's abstract gives image AP 97.3)",
         2.06, 0.32, 52.6, (96.9, 72.9, 69.1), (94.3, 96.9, 95.7)),
    _row("AnomalyAny", "zero-shot", f"{AGENT_PAPER}, Tab. 1", 2.02, 0.33),
    _row("AnoStyler", "zero-shot", f"{AGENT_PAPER}, Tabs. 1-2", 2.04, 0.32, 32.2),
    _row("image model, fixed prompt (no agent)", "zero-shot", AGENT_PAPER, 1.91, 0.29, 44.7,
         (96.8, 67.6, 64.1), (96.6, 98.2, 95.1)),
    _row("DRAEM", "zero-shot", f"{AGENT_PAPER}, appendix", 1.76, 0.25, None, (92.2, 54.1, 53.1), (94.6, 97.0, 94.4)),
    _row("DFMGAN", "few-shot", f"{AGENT_PAPER}, appendix", pixel=(90.0, 62.7, 62.1), image=(87.2, 94.8, 94.7)),
    _row("AnomalyDiffusion", "few-shot", "paper values quoted in sjtuplayer/anomalydiffusion issue 97",
         pixel=(99.1, 81.4, None), image=(99.2, 99.7, None)),
]

# AnomalyAgent's ablations, ResNet-34 anomaly-type accuracy (%), same source
ABLATIONS: Dict[str, float] = {"SFT only": 52.4, "SFT + RL": 57.0, "task reward only": 53.6,
                               "+ reflection reward": 55.3, "+ behaviour reward": 57.0}


def published(name: str) -> Dict[str, object]:
    return next(p for p in PUBLISHED if p["name"] == name)
