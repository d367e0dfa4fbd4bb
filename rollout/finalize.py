"""From a finished episode to one deliverable sample: the edited image and its mask.

Shared by ``anomalyagent synthesize`` and the Serve endpoint. The agent's own choice wins:
the image its answer names, with the mask it made. Where the episode ended without one
(a turn cap, a malformed run), the best QE-scored generated image is taken, else the last
generated one; a missing mask is made by the MG tool. An episode that generated nothing
falls back to the plain tool chain PG → IG → MG on the normal image, and the sample says
so in ``source`` — counts of each source are reported, never hidden.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np

SOURCES = ("agent", "agent_choice_tool_mask", "agent_fallback_choice", "tool_chain")


@dataclass
class Sample:
    image: np.ndarray
    mask: np.ndarray
    source: str  # one of SOURCES
    image_index: int  # index into the episode's images; 0 for the tool-chain fallback


class FinalizeError(RuntimeError):
    """Even the tool-chain fallback failed (a tool returned an error)."""


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


async def finalize(record: Mapping[str, Any], tools: Mapping[str, Any], seed: int = 0) -> Sample:
    task = record["task"]
    ctx = {"category": task["category"], "defect_type": task["defect_type"]}
    normal = record["images"][0]
    idx, by_answer = chosen_index(record)
    if idx is None:
        prompt = (await _call(tools, "prompt_gen", {}, None, ctx))["prompt"]
        args = {"prompt": prompt, "seed": seed}
        if task.get("region") is not None:
            args["region"] = list(task["region"])
        gen = await _call(tools, "image_gen", args, {"image": normal}, ctx)
        mask = (await _call(tools, "mask_gen", {}, {"normal": normal, "edited": gen["image"]},
                            {**ctx, "region_px": gen["region_px"]}))["mask"]
        return Sample(gen["image"], mask, "tool_chain", 0)
    edited = record["images"][idx]
    mask = record.get("masks", {}).get(idx)
    if mask is not None:
        return Sample(edited, mask, "agent" if by_answer else "agent_fallback_choice", idx)
    meta = record["image_meta"][idx] if idx < len(record["image_meta"]) else {}
    mask = (await _call(tools, "mask_gen", {"image_index": idx}, {"normal": normal, "edited": edited},
                        {**ctx, "region_px": meta.get("region_px")}))["mask"]
    return Sample(edited, mask, "agent_choice_tool_mask" if by_answer else "agent_fallback_choice", idx)
