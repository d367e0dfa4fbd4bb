"""Structured SFT trajectories from real anomaly images (design.md §5), in the exact episode
format and tokenized exactly as the episode tokenizes (policy turns and observations
encoded separately), so SFT and rollout see the same token sequences.

For each real anomaly of a ``source`` category: choose N ∈ {1, 2, 3} generations. The first
N−1 are made by the real IG tool from the normal image with simpler prompts and are judged
by the real QE tool; they must score below the real anomaly, which is the final, passing
image. KR is consulted after a low score; MG closes the episode; the thinking text quotes
the tool results it reacts to.

Where we depart from the paper: the normal image is a hook (``NormalSource``). The default
takes a good image of the category; for our synthetic data it recreates the exact normal
the anomaly was drawn on, standing in for the paper's edited-back normal. IG calls leave the
region to the tool (it places the defect on the object), which keeps the tiny policy's
tool calls short.

Also ours: *text relabelling* (``sft.relabel_fraction``). A tiny policy trained on the few
words of two source categories memorizes them (it wrote "washer ring" in marble episodes and
then lost the format). A relabelled trajectory keeps the source image, mask and the real
tool calls on them, but the task, PG prompt, KR text and QE review speak of another
knowledge-base entry — never a target category — so the policy sees many categories'
words around the same tool-use structure. A text policy never sees the pixels.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from actors.defect_words import prompt_for
from actors.knowledge_base import load_knowledge_base
from actors.regions import to_normalized
from actors.tool import ToolRequest
from rollout.data.types import Sample
from rollout.format import ANSWER_CLOSE, ANSWER_OPEN, CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN
from rollout.prompts import SYSTEM_PROMPT, observation_text, task_text


class NormalSource(Protocol):
    def normal_for(self, sample: Sample, rng: np.random.Generator) -> np.ndarray: ...


class GoodImageNormals:
    """A random good training image of the category (real datasets)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def normal_for(self, sample: Sample, rng: np.random.Generator) -> np.ndarray:
        goods = self.dataset.train(sample.category)
        return np.asarray(Image.open(goods[int(rng.integers(len(goods)))].image).convert("RGB"))


class SyntheticNormals:
    """The exact normal a synthetic anomaly was drawn on."""

    def __init__(self, root):
        self.root = root

    def normal_for(self, sample: Sample, rng: np.random.Generator) -> np.ndarray:
        from rollout.data.synthetic import source_normal

        return source_normal(self.root, sample.category, sample.defect, int(sample.image.stem))


def _turn(thinking: str, call: Optional[Dict[str, Any]] = None, answer: Optional[Dict[str, Any]] = None) -> str:
    body = f"{CALL_OPEN}{json.dumps(call)}{CALL_CLOSE}" if call is not None else f"{ANSWER_OPEN}{json.dumps(answer)}{ANSWER_CLOSE}"
    return f"{THINK_OPEN}{thinking}{THINK_CLOSE}{body}"


FAIL_MARGIN = 0.25  # an earlier attempt scores at least this much below the final image (mean of both scores)


def _mean(score: Dict[str, Any]) -> float:
    return (score["location_score"] + score["quality_score"]) / 2


@dataclass
class Trajectory:
    trajectory_id: str
    category: str
    defect_type: str
    n_generations: int
    tools: List[str]
    turns: List[str]  # policy turn texts
    observations: List[Dict[str, Any]]  # payload after each turn but the last
    anomaly_path: str


class TrajectoryBuilder:
    """Runs the real tool cores in-process (no Ray needed to build data)."""

    def __init__(self, tools, normals: NormalSource, seed: int = 0, relabel_fraction: float = 0.0,
                 exclude_categories: Sequence[str] = ()):
        if not 0.0 <= relabel_fraction <= 1.0:
            raise ValueError(f"sft.relabel_fraction must be in [0, 1], got {relabel_fraction}")
        self.tools, self.normals, self.kb, self.seed = tools, normals, load_knowledge_base(), seed
        self.relabel_fraction = relabel_fraction
        self.relabel_pool = [(e.category, e.defect) for e in self.kb.entries if e.category not in set(exclude_categories)]

    def _labels(self, sample: Sample, rng: np.random.Generator):
        """(category, defect) the trajectory's text speaks of: the sample's, or a relabel."""
        if self.relabel_fraction > 0 and self.relabel_pool and rng.random() < self.relabel_fraction:
            return self.relabel_pool[int(rng.integers(len(self.relabel_pool)))]
        return sample.category, sample.defect

    def _call(self, name: str, args: Dict[str, Any], images=None, context=None) -> Dict[str, Any]:
        return self.tools[name].run_one(ToolRequest(args, images or {}, context or {}))

    def build(self, sample: Sample, variant: int = 0) -> Optional[Trajectory]:
        rng = np.random.default_rng([self.seed, variant, int(sample.image.stem), len(sample.defect), len(sample.category)])
        category, defect = self._labels(sample, rng)
        entry = self.kb.get(category, defect)
        ctx = {"category": category, "defect_type": defect}
        normal = self.normals.normal_for(sample, rng)
        anomaly = np.asarray(Image.open(sample.image).convert("RGB"))
        if normal.shape != anomaly.shape:
            return None
        mask = np.asarray(Image.open(sample.masks[0]).convert("L")) > 127
        ys, xs = np.nonzero(mask)
        if not len(xs):
            return None
        h, w = mask.shape
        pad = max(2, int(0.25 * max(np.ptp(xs), np.ptp(ys))))
        box = (max(0, xs.min() - pad), max(0, ys.min() - pad), min(w, xs.max() + 1 + pad), min(h, ys.max() + 1 + pad))
        final_ctx = {**ctx, "region_px": list(box)}
        final_score = self._call("quality_eval", {}, {"normal": normal, "edited": anomaly}, final_ctx)
        n = int(rng.integers(1, 4))
        name = defect.replace("_", " ")
        turns, obs, tools = [], [], []

        def step(text, call, payload):
            turns.append(_turn(text, call))
            obs.append(payload)
            tools.append(call["name"])

        pg = self._call("prompt_gen", {}, None, ctx)["prompt"]
        step(f"I need a prompt for the {name}.",
             {"name": "prompt_gen", "arguments": {}}, {"prompt": pg})
        attempts = [prompt_for(entry, simple=True), f"a subtle pale {entry.shape} on the {category}",
                    f"a tiny faint spot on the {category}"]
        image_index = 0
        for m in range(n - 1):
            for prompt in attempts[m:] + attempts[:m]:  # a clearly failing attempt, else drop this one
                seed = int(rng.integers(0, 10_000))
                edit = self._call("image_gen", {"prompt": prompt, "seed": seed}, {"image": normal}, ctx)
                score = self._call("quality_eval", {}, {"normal": normal, "edited": edit["image"]},
                                   {**ctx, "region_px": edit["region_px"]})
                if _mean(score) <= _mean(final_score) - FAIL_MARGIN:
                    break
            else:
                continue
            image_index += 1
            think = ("Start simple: a plain version of the defect." if m == 0 else
                     "Try once more with a different wording.")
            step(think, {"name": "image_gen", "arguments": {"prompt": prompt}},
                 {"image_index": image_index, "region": edit["region"]})
            step(f"Check image {image_index}.", {"name": "quality_eval", "arguments": {"image_index": image_index}},
                 {"image_index": image_index, "location_score": score["location_score"],
                  "quality_score": score["quality_score"], "review": score["review"]})
            know = self._call("knowledge", {}, None, ctx)["text"]
            step(f"Quality {score['quality_score']:.1f} is low. Look up the {name}.",
                 {"name": "knowledge", "arguments": {}}, {"text": know})
        image_index += 1
        think = "Use the first prompt with the knowledge." if image_index > 1 else "Edit image 0 with the prompt."
        step(think, {"name": "image_gen", "arguments": {"prompt": pg}},
             {"image_index": image_index, "region": list(to_normalized(box, w, h))})
        step(f"Check image {image_index}.", {"name": "quality_eval", "arguments": {"image_index": image_index}},
             {"image_index": image_index, "location_score": final_score["location_score"],
              "quality_score": final_score["quality_score"], "review": final_score["review"]})
        mg = self._call("mask_gen", {"image_index": image_index}, {"normal": normal, "edited": anomaly},
                        {"region_px": list(box)})
        step(f"Quality {final_score['quality_score']:.1f} is the best. Make the mask.", {"name": "mask_gen", "arguments": {"image_index": image_index}},
             {"image_index": image_index, "mask_area": mg["area"]})
        turns.append(_turn(f"Image {image_index} is done.", answer={"status": "success", "final_image_index": image_index}))
        tools.append("answer")
        return Trajectory(f"{sample.category}-{sample.defect}-{sample.image.stem}-v{variant}", category,
                          defect, image_index, tools, turns, obs, str(sample.image))


def tokenize(traj: Trajectory, tokenizer) -> Dict[str, List[int]]:
    """prompt_ids, response_ids and response_mask exactly as an episode would hold them."""
    msgs = [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": task_text(traj.category, traj.defect_type)}]
    prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    ids, mask = [], []
    for i, turn in enumerate(traj.turns):
        t = tokenizer.encode(turn, add_special_tokens=False)
        ids += t
        mask += [1] * len(t)
        if i < len(traj.observations):
            o = tokenizer.encode(observation_text(traj.observations[i]), add_special_tokens=False)
            ids += o
            mask += [0] * len(o)
    return {"prompt_ids": list(prompt), "response_ids": ids, "response_mask": mask}


def write_sft_dataset(trajs: Sequence[Trajectory], tokenizer, out: Path) -> Dict[str, Any]:
    """Parquet dataset plus a summary of the N and tool-sequence distributions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for t in trajs:
        tok = tokenize(t, tokenizer)
        rows.append({"trajectory_id": t.trajectory_id, "category": t.category, "defect_type": t.defect_type,
                     "n_generations": t.n_generations, "tools": t.tools, "turns": t.turns,
                     "observations": json.dumps(t.observations), "anomaly_path": t.anomaly_path, **tok})
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".sft.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(out / "sft.parquet")
    summary = {
        "trajectories": len(rows),
        "n_generations": dict(sorted(Counter(t.n_generations for t in trajs).items())),
        "tool_sequences": dict(Counter("→".join(t.tools) for t in trajs).most_common()),
        "mean_tokens": float(np.mean([len(r["prompt_ids"]) + len(r["response_ids"]) for r in rows])) if rows else 0.0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return summary
