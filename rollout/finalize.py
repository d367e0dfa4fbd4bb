"""From a finished episode to one deliverable sample, and the gate it must pass.

Shared by ``anomalyagent synthesize``, the Serve endpoint and the benchmarks. The agent's own
choice wins: the image its answer names, with the mask it made. Where the episode ended
without one (a turn cap, a malformed run), the best QE-scored generated image is taken,
else the last generated one; a missing mask is made by the MG tool. An episode that
generated nothing delivers nothing, unless ``tool_chain`` asks for the plain PG → IG → MG
chain on the normal image (labelled ``tool_chain``: it is not the agent's work).

The gate (``deliver``): a sample is delivered only if the edited image visibly differs
from the normal, its mask is not empty and covers the change, and the judge, asked again
on delivery, passes it as the requested defect type. A sample that fails is never written
as an anomaly; callers count it (by category, defect type and source) and may re-run the
episode with a new seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import cv2
import numpy as np

from actors.defect_measure import CHANGE_LEVEL, MIN_CHANGED_PX, change_map

SOURCES = ("agent", "agent_choice_tool_mask", "agent_fallback_choice", "tool_chain")
GATE_REASONS = ("nothing_generated", "no_change", "empty_mask", "mask_misses_change", "qe_fail")
MASK_COVERAGE = 0.9  # share of the changed pixels the mask (grown by 2 px for soft edges) must cover


@dataclass
class Sample:
    image: np.ndarray
    mask: np.ndarray
    source: str  # one of SOURCES
    image_index: int  # index into the episode's images; 0 for the tool-chain fallback
    region_px: Optional[list] = None


@dataclass
class Delivery:
    """A sample and the gate's verdict on it. ``sample`` is None when nothing was generated."""

    sample: Optional[Sample]
    passed: bool
    reason: Optional[str]  # None when passed, else one of GATE_REASONS
    qe: Dict[str, Any] = field(default_factory=dict)
    changed_px: int = 0
    coverage: float = 0.0

    @property
    def source(self) -> str:
        return self.sample.source if self.sample is not None else "none"

    def summary(self) -> Dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "source": self.source, "qe": self.qe,
                "changed_px": self.changed_px, "coverage": round(self.coverage, 4)}


class FinalizeError(RuntimeError):
    """A tool returned an error while finalizing."""


def chosen_index(record: Mapping[str, Any]) -> tuple[Optional[int], bool]:
    """(image index, whether the agent's answer named it); None when nothing was generated."""
    n = len(record["images"])
    if n < 2:
        return None, False
    answer = record.get("answer") or {}
    idx = answer.get("final_image_index") if record.get("status") == "answer" else None
    if isinstance(idx, int) and 1 <= idx < n:
        return idx, True
    scored = [(s["location_score"] + s["quality_score"], s["image_index"]) for s in record.get("qe_scores", [])
              if 1 <= s["image_index"] < n]
    if scored:
        return max(scored)[1], False
    return n - 1, False


async def _call(tools, name: str, args, images, ctx) -> Dict[str, Any]:
    out = await tools[name].call(args, images, ctx)
    if not out["ok"]:
        err = out["error"]
        raise FinalizeError(f"{name} failed while finalizing: {err['code']}: {err['message']}")
    return out["result"]


def _context(record: Mapping[str, Any]) -> Dict[str, Any]:
    task = record["task"]
    return {"category": task["category"], "defect_type": task["defect_type"]}


async def finalize(record: Mapping[str, Any], tools: Mapping[str, Any], seed: int = 0,
                   tool_chain: bool = False) -> Optional[Sample]:
    """The episode's sample (not yet gated), or None when it generated nothing and
    ``tool_chain`` is off."""
    ctx = _context(record)
    normal = record["images"][0]
    idx, by_answer = chosen_index(record)
    if idx is None:
        if not tool_chain:
            return None
        prompt = (await _call(tools, "prompt_gen", {}, None, ctx))["prompt"]
        args = {"prompt": prompt, "seed": seed}
        task = record["task"]
        if task.get("region") is not None:
            args["region"] = list(task["region"])
        gen = await _call(tools, "image_gen", args, {"image": normal}, ctx)
        mask = (await _call(tools, "mask_gen", {}, {"normal": normal, "edited": gen["image"]},
                            {**ctx, "region_px": gen["region_px"]}))["mask"]
        return Sample(gen["image"], mask, "tool_chain", 0, list(gen["region_px"]))
    edited = record["images"][idx]
    meta = record["image_meta"][idx] if idx < len(record["image_meta"]) else {}
    region = meta.get("region_px")
    mask = record.get("masks", {}).get(idx)
    if mask is not None:
        return Sample(edited, mask, "agent" if by_answer else "agent_fallback_choice", idx, region)
    mask = (await _call(tools, "mask_gen", {"image_index": idx}, {"normal": normal, "edited": edited},
                        {**ctx, "region_px": region}))["mask"]
    return Sample(edited, mask, "agent_choice_tool_mask" if by_answer else "agent_fallback_choice", idx, region)


def check_change_and_mask(normal: np.ndarray, sample: Sample) -> tuple[Optional[str], int, float]:
    """(failure reason or None, changed pixels, mask coverage of the change)."""
    changed = change_map(normal, sample.image) > CHANGE_LEVEL
    n = int(changed.sum())
    if n < MIN_CHANGED_PX:
        return "no_change", n, 0.0
    mask = np.asarray(sample.mask) > 0
    if not mask.any():
        return "empty_mask", n, 0.0
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    coverage = float((changed & grown).sum() / n)
    return (None if coverage >= MASK_COVERAGE else "mask_misses_change"), n, coverage


async def deliver(record: Mapping[str, Any], tools: Mapping[str, Any], seed: int = 0,
                  tool_chain: bool = False) -> Delivery:
    """Finalize the episode and gate the sample (see the module docstring)."""
    sample = await finalize(record, tools, seed, tool_chain)
    if sample is None:
        return Delivery(None, False, "nothing_generated")
    normal = record["images"][0]
    reason, n, coverage = check_change_and_mask(normal, sample)
    if reason is not None:
        return Delivery(sample, False, reason, changed_px=n, coverage=coverage)
    qe = await _call(tools, "quality_eval", {}, {"normal": normal, "edited": sample.image},
                     {**_context(record), "region_px": sample.region_px})
    qe = {k: qe[k] for k in ("location_score", "quality_score", "pass", "review") if k in qe}
    return Delivery(sample, bool(qe.get("pass")), None if qe.get("pass") else "qe_fail", qe, n, coverage)
