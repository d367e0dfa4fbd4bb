"""The human evaluation's numbers: good-sample rate with Wilson 95 % intervals, and agreement
between raters (Cohen's κ for two, Fleiss' κ for any number).

The published work reports a "Good Sample Rate" (91.3 % for AnomalyAgent on its human
evaluation set) without intervals; we give Wilson intervals because rating sets are small.
Fleiss' κ is computed with the per-sample agreement averaged over samples rated by at least
two raters (the form that allows a different number of raters per sample).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

Z95 = 1.959963984540054


def wilson(good: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """(low, high) of the Wilson score interval of ``good`` out of ``n`` (0, 1 when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = good / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def good_rates(ratings: Iterable[Mapping[str, str]], by: Sequence[str]) -> List[Dict[str, object]]:
    """One row per value of the ``by`` keys (e.g. source; source and category): ratings,
    good, rate and its Wilson interval. Each rating counts once (one rater, one sample)."""
    groups: Dict[Tuple, List[bool]] = defaultdict(list)
    for r in ratings:
        groups[tuple(r[k] for k in by)].append(r["verdict"] == "good")
    rows = []
    for key in sorted(groups):
        v = groups[key]
        lo, hi = wilson(sum(v), len(v))
        rows.append({**dict(zip(by, key)), "ratings": len(v), "good": sum(v), "rate": sum(v) / len(v),
                     "low": lo, "high": hi})
    return rows


def _by_sample(ratings: Iterable[Mapping[str, str]]) -> Dict[str, Dict[str, str]]:
    out: Dict[str, Dict[str, str]] = defaultdict(dict)
    for r in ratings:
        out[r["sample"]][r["rater"]] = r["verdict"]
    return out


def fleiss_kappa(ratings: Iterable[Mapping[str, str]]) -> Optional[float]:
    """Fleiss' κ over the samples rated by two raters or more; None when there are none (or
    every rating is the same verdict, where κ is undefined)."""
    per = [list(v.values()) for v in _by_sample(ratings).values() if len(v) >= 2]
    if not per:
        return None
    agree, counts, total = [], defaultdict(int), 0
    for verdicts in per:
        n = len(verdicts)
        c = {k: verdicts.count(k) for k in set(verdicts)}
        agree.append(sum(x * (x - 1) for x in c.values()) / (n * (n - 1)))
        for k, x in c.items():
            counts[k] += x
        total += n
    p_bar = sum(agree) / len(agree)
    p_e = sum((x / total) ** 2 for x in counts.values())
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def cohen_kappa(ratings: Iterable[Mapping[str, str]], a: str, b: str) -> Optional[float]:
    """Cohen's κ of raters ``a`` and ``b`` on the samples both rated."""
    pairs = [(v[a], v[b]) for v in _by_sample(ratings).values() if a in v and b in v]
    if not pairs:
        return None
    n = len(pairs)
    p_o = sum(x == y for x, y in pairs) / n
    labels = {x for p in pairs for x in p}
    p_e = sum((sum(x == k for x, _ in pairs) / n) * (sum(y == k for _, y in pairs) / n) for k in labels)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def agreement(ratings: Sequence[Mapping[str, str]]) -> Dict[str, object]:
    raters = sorted({r["rater"] for r in ratings})
    shared = sum(1 for v in _by_sample(ratings).values() if len(v) >= 2)
    out: Dict[str, object] = {"raters": raters, "samples_rated_by_two_or_more": shared,
                              "fleiss_kappa": fleiss_kappa(ratings)}
    if len(raters) == 2:
        out["cohen_kappa"] = cohen_kappa(ratings, *raters)
    return out
