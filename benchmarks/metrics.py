"""Detection metrics in numpy: AUROC, AP, F1-max over scores, and AU-PRO over anomaly maps.

All are exact over the distinct score thresholds (no binning), O(n log n). AP follows
scikit-learn's step definition (sum of precision times recall increments); AU-PRO follows
the MVTec AD protocol: per-region overlap averaged over the ground-truth connected
components of the whole category, integrated over the false-positive rate up to ``limit``
and divided by ``limit``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np


def _curve(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, descending."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in size")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(w * y)[last]
    fp = np.cumsum(~y)[last].astype(np.float64)
    return tp, fp, s[last]


def _check_both_classes(labels) -> np.ndarray:
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("need both positive and negative labels")
    return labels


def auroc(labels, scores) -> float:
    labels = _check_both_classes(labels)
    tp, fp, _ = _curve(labels, scores)
    tpr = np.r_[0.0, tp / labels.sum()]
    fpr = np.r_[0.0, fp / (~labels).sum()]
    return float(np.trapezoid(tpr, fpr))


def average_precision(labels, scores) -> float:
    labels = _check_both_classes(labels)
    tp, fp, _ = _curve(labels, scores)
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_max(labels, scores) -> float:
    labels = _check_both_classes(labels)
    tp, fp, _ = _curve(labels, scores)
    precision, recall = tp / (tp + fp), tp / labels.sum()
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return float(f1.max())


def connected_regions(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Stacked region ids (0 = background, 1..R unique over all images, 8-connectivity)."""
    out, offset = [], 0
    for m in masks:
        n, lab = cv2.connectedComponents((np.asarray(m) > 0).astype(np.uint8), connectivity=8)
        lab = lab.astype(np.int64)
        lab[lab > 0] += offset
        offset += n - 1
        out.append(lab)
    return np.stack(out)


def _pro_inputs(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]):
    """(stacked region ids, stacked float maps, number of regions), checked."""
    regions = connected_regions(masks)
    maps = np.stack([np.asarray(m, dtype=np.float64) for m in maps])
    if maps.shape != regions.shape:
        raise ValueError(f"anomaly maps {maps.shape} and masks {regions.shape} differ in shape")
    n_regions = int(regions.max())
    if n_regions == 0 or (regions > 0).all():
        raise ValueError("AU-PRO needs at least one anomalous region and some normal pixels")
    return regions, maps, n_regions


def au_pro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], limit: float = 0.3) -> float:
    """Normalized area under the PRO curve up to FPR ``limit``.

    Mean over regions of each region's overlap at a threshold equals the sum over the
    region pixels above it of 1 / (R * region size), so one sorted pass gives the curve.
    """
    regions, maps, n_regions = _pro_inputs(masks, maps)
    sizes = np.bincount(regions.ravel(), minlength=n_regions + 1).astype(np.float64)
    weight = np.where(regions > 0, 1.0 / (n_regions * sizes[regions]), 0.0)
    pro, fp, _ = _curve(regions > 0, maps, weight)
    fpr = np.r_[0.0, fp / (regions == 0).sum()]
    pro = np.r_[0.0, pro]
    keep = fpr <= limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < limit:  # close the curve at the limit, interpolated on the next segment
        nxt = np.argmax(fpr > limit)
        y_lim = np.interp(limit, [fpr[nxt - 1], fpr[nxt]], [pro[nxt - 1], pro[nxt]])
        x, y = np.r_[x, limit], np.r_[y, y_lim]
    return float(np.trapezoid(y, x) / limit)


# The published scripts' binned variants (AnomalyDiffusion's test-localization.py), for
# numbers that compare with the papers; the exact ones above stay beside them.
PRO_THRESHOLDS = 100
F1_THRESHOLDS = 21


def au_pro_binned(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], limit: float = 0.3,
                  num_th: int = PRO_THRESHOLDS) -> float:
    """AU-PRO as the published scripts compute it: ``num_th`` thresholds evenly spaced from
    the maps' minimum (inclusive) to their maximum (exclusive); at each, PRO is the mean
    overlap of every ground-truth region (8-connected, over all images) and FPR the share of
    normal pixels above it; points with FPR < ``limit`` are kept, their FPR divided by the
    largest kept FPR, and the trapezoid area taken (so the result is not divided by limit)."""
    regions, maps, n_regions = _pro_inputs(masks, maps)
    sizes = np.bincount(regions.ravel(), minlength=n_regions + 1)[1:].astype(np.float64)
    lo, hi = float(maps.min()), float(maps.max())
    normal = regions == 0
    pros, fprs = [], []
    for th in lo + (hi - lo) / num_th * np.arange(num_th):
        above = maps > th
        hits = np.bincount(regions[above], minlength=n_regions + 1)[1:]
        pros.append(float(np.mean(hits / sizes)))
        fprs.append(float((above & normal).sum() / normal.sum()))
    fpr, pro = np.asarray(fprs), np.asarray(pros)
    keep = fpr < limit
    if keep.sum() < 2 or fpr[keep].max() == 0:
        return 0.0
    x, y = fpr[keep] / fpr[keep].max(), pro[keep]
    order = np.argsort(x, kind="mergesort")
    return float(np.trapezoid(y[order], x[order]))


def f1_max_binned(labels, scores, num_th: int = F1_THRESHOLDS) -> float:
    """The best F1 over ``num_th`` thresholds evenly spaced on [0, 1] (the anomaly channel's
    softmax), a pixel counting as positive where its score is at least the threshold."""
    labels = _check_both_classes(labels)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    best = 0.0
    for th in np.linspace(0.0, 1.0, num_th):
        pred = scores >= th
        tp = float((pred & labels).sum())
        if tp == 0:
            continue
        precision, recall = tp / pred.sum(), tp / labels.sum()
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
