"""Calibration of the QE judge on a dataset's real anomalies (``anomalyagent bench judge``).

Every real anomaly is judged as its own defect type and as every other type of its
category; every ``test/good`` image is judged as each type too. Four shares come out:

- ``judge_type_accuracy``: the anomaly's own type scores strictly highest (quality, then
  location);
- ``real_pass``: the anomaly passes as its own type;
- ``wrong_type_fail``: it fails as each other type;
- ``normal_fail``: a normal image fails as every type.

The judge needs the normal image behind each anomaly. The synthetic set records it
exactly (``rollout.data.synthetic.source_normal``); for any other MVTec-layout root we take
the ``train/good`` image nearest in pixels (MVTec objects are photographed in place, so the
difference is mostly the defect — the judge's numbers there are a lower bound). The region
is the ground-truth mask's box, padded as the SFT builder pads it. The judge is whichever
QE backend the config names (metric or VLM), called in-process.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from rollout.data.images import read_mask, read_rgb


def _rgb(path) -> np.ndarray:
    return read_rgb(path)


class NearestNormal:
    """The ``train/good`` image closest in pixels (16×16 thumbnails) to an image."""

    def __init__(self, dataset, category: str):
        self.paths = [s.image for s in dataset.train(category)]
        self.thumbs = np.stack([self._thumb(_rgb(p)) for p in self.paths]) if self.paths else None

    @staticmethod
    def _thumb(img: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(img).resize((16, 16), Image.BILINEAR), np.float32).ravel()

    def __call__(self, image: np.ndarray) -> Optional[np.ndarray]:
        if self.thumbs is None:
            return None
        i = int(np.argmin(((self.thumbs - self._thumb(image)) ** 2).sum(1)))
        normal = _rgb(self.paths[i])
        return normal if normal.shape == image.shape else None


def mask_box(mask: np.ndarray) -> Optional[list]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    h, w = mask.shape
    pad = max(2, int(0.25 * max(np.ptp(xs), np.ptp(ys))))
    return [int(max(0, xs.min() - pad)), int(max(0, ys.min() - pad)), int(min(w, xs.max() + 1 + pad)),
            int(min(h, ys.max() + 1 + pad))]


def judge_as_each_type(qe_tool, normal: np.ndarray, image: np.ndarray, category: str, defects: Sequence[str],
                       region: Optional[list]) -> Dict[str, Dict[str, Any]]:
    """The judge's result for ``image`` as each of ``defects``."""
    from actors.tool import ToolRequest

    return {d: qe_tool.run_one(ToolRequest({}, {"normal": normal, "edited": image},
                                           {"category": category, "defect_type": d, "region_px": region}))
            for d in defects}


def winner(scores: Dict[str, Dict[str, Any]]) -> Optional[str]:
    """The type with the strictly highest (quality, location); None on a tie."""
    ranked = sorted(scores, key=lambda d: (scores[d]["quality_score"], scores[d]["location_score"]), reverse=True)
    if len(ranked) > 1:
        a, b = scores[ranked[0]], scores[ranked[1]]
        if (a["quality_score"], a["location_score"]) == (b["quality_score"], b["location_score"]):
            return None
    return ranked[0]


def calibrate(dataset, root: Path, qe_tool, categories: Optional[Sequence[str]] = None,
              max_per_type: Optional[int] = None, progress: bool = True) -> Dict[str, Any]:
    """Confusion matrices per category and the four shares (module docstring)."""
    from tqdm import tqdm

    from rollout.data.synthetic import source_normal

    synthetic = (Path(root) / "dataset.json").is_file()
    cats = list(categories or dataset.categories)
    confusion: Dict[str, Dict[str, Dict[str, int]]] = {}
    own, wrong, normal_fail, unpaired, normals = [], [], [], 0, 0
    jobs = []
    for cat in cats:
        defects = dataset.defect_types(cat)
        confusion[cat] = {d: defaultdict(int) for d in defects}
        per_type = defaultdict(int)
        for s in dataset.anomalies(cat):
            if max_per_type is None or per_type[s.defect] < max_per_type:
                per_type[s.defect] += 1
                jobs.append((cat, defects, s))
        jobs += [(cat, defects, s) for s in dataset.test(cat) if not s.is_anomaly][: max_per_type or None]
    nearest = {}
    for cat, defects, s in tqdm(jobs, desc="bench judge", unit="img", disable=not progress):
        image = _rgb(s.image)
        if synthetic and s.is_anomaly:
            normal = source_normal(root, cat, s.defect, int(s.image.stem))
        elif synthetic:
            normal = image
        else:
            nearest.setdefault(cat, NearestNormal(dataset, cat))
            normal = nearest[cat](image)
        if normal is None or normal.shape != image.shape:
            unpaired += 1
            continue
        if not s.is_anomaly:
            scores = judge_as_each_type(qe_tool, normal, image, cat, defects, None)
            normal_fail += [not r["pass"] for r in scores.values()]
            normals += 1
            continue
        mask = read_mask(s.masks[0])
        scores = judge_as_each_type(qe_tool, normal, image, cat, defects, mask_box(mask))
        w = winner(scores)
        confusion[cat][s.defect][w or "(tie)"] += 1
        own.append((w == s.defect, bool(scores[s.defect]["pass"])))
        wrong += [not scores[d]["pass"] for d in defects if d != s.defect]
    share = lambda xs: float(np.mean(xs)) if len(xs) else float("nan")  # noqa: E731
    return {
        "judge_type_accuracy": share([a for a, _ in own]), "real_pass": share([p for _, p in own]),
        "wrong_type_fail": share(wrong), "normal_fail": share(normal_fail),
        "anomalies": len(own), "normals": normals, "unpaired": unpaired,
        "normal_source": "exact (synthetic)" if synthetic else "nearest train/good image",
        "confusion": {c: {d: dict(row) for d, row in m.items()} for c, m in confusion.items()},
    }


def write_report(res: Dict[str, Any], out: Path) -> List[Path]:
    """``confusion.md`` (a matrix per category), ``judge.json`` and ``confusion.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# QE judge calibration ({res['normal_source']} normals)", "",
             f"type accuracy {res['judge_type_accuracy']:.3f}, real pass {res['real_pass']:.3f}, "
             f"wrong type fail {res['wrong_type_fail']:.3f}, normal fail {res['normal_fail']:.3f} "
             f"({res['anomalies']} anomalies; {res['unpaired']} without a normal of their size)", ""]
    cats = list(res["confusion"])
    fig, axes = plt.subplots(1, max(1, len(cats)), figsize=(3.6 * max(1, len(cats)), 3.4), squeeze=False)
    for ax, cat in zip(axes[0], cats):
        m = res["confusion"][cat]
        defects = list(m)
        cols = defects + (["(tie)"] if any("(tie)" in r for r in m.values()) else [])
        lines += [f"## {cat} (rows: true type, columns: the judge's winner)", "",
                  "| true \\ judged | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        grid = np.array([[m[d].get(c, 0) for c in cols] for d in defects])
        lines += [f"| {d} | " + " | ".join(str(v) for v in row) + " |" for d, row in zip(defects, grid)] + [""]
        ax.imshow(grid, cmap="Blues")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(defects)), defects, fontsize=7)
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_title(cat, fontsize=9)
    fig.tight_layout()
    paths = [out / "confusion.md", out / "judge.json", out / "confusion.png"]
    paths[0].write_text("\n".join(lines))
    paths[1].write_text(json.dumps(res, indent=1))
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths
