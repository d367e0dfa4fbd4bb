"""Structured SFT trajectories from real anomaly images (design.md §5), in the exact episode
format and tokenized exactly as the episode tokenizes (policy turns and observations
encoded separately), so SFT and rollout see the same token sequences.

For each real anomaly of a ``source`` category: choose N ∈ {1, 2, 3} generations. The first
N−1 are made by the real IG tool from the normal image — with simpler prompts made of the PG
prompt's own words, or with the full prompt on a seed that fails — and must *fail* the real
QE tool; the real anomaly is the final image and must pass it (anomalies that do not are
skipped). KR is consulted after a failure; MG closes the episode. Every image_gen prompt
uses only words the episode has seen, so the trajectories are valid under the turn grammar
(rollout/grammar.py) the policy is later decoded with.

Where we depart from the paper: the normal image is a hook (``NormalSource``). The default
takes a good image of the category; for our synthetic data it recreates the exact normal
the anomaly was drawn on, standing in for the paper's edited-back normal. IG calls leave the
region to the tool (it places the defect on the object), which keeps the tiny policy's
tool calls short.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence

import numpy as np

from actors.regions import to_normalized
from actors.tool import ToolRequest
from rollout.data.images import read_mask, read_rgb
from rollout.data.types import Sample
from rollout.format import ANSWER_CLOSE, ANSWER_OPEN, CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN
from rollout.grammar import WORD, copy_graph
from rollout.prompts import SYSTEM_PROMPT, observation_text, task_text


class NormalSource(Protocol):
    def normal_for(self, sample: Sample, rng: np.random.Generator) -> np.ndarray: ...


class GoodImageNormals:
    """A random good training image of the category (real datasets)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def normal_for(self, sample: Sample, rng: np.random.Generator) -> np.ndarray:
        goods = self.dataset.train(sample.category)
        return read_rgb(goods[int(rng.integers(len(goods)))].image)


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


# The thinking lines (word swap keeps their words: policy/word_swap.py reads this table).
THINKING = {
    "prompt": "I need a prompt for the {name}.",
    "plain": "Start simple: a plain version of the defect.",
    "direct": "Edit image 0 with the prompt.",
    "check": "Check image {k}.",
    "failed": "Image {k} failed. Look up the {name}.",
    "revise": "Fix what the review says.",
    "passed": "Image {k} passed. Make the mask.",
    "done": "Image {k} is done.",
}


def reduced_prompts(pg: str, texts: Sequence[str]) -> List[str]:
    """Shorter prompts a copying policy can write: the beginnings of PG's prompt that end
    where one of the episode's texts ends a sentence (e.g. at the defect's name, which ends
    the task line). They lack what follows (size, place, contrast): the earlier, failing
    attempts of a trajectory. Valid under the turn grammar by construction."""
    _, _, ends = copy_graph(texts)
    words = list(WORD.finditer(pg))
    return [pg[: m.end()] for i, m in enumerate(words[:-1]) if i >= 2 and m.group() in ends]


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
    images: List[np.ndarray] = field(default_factory=list)  # 0: the normal, then each image_gen result, in order


class TrajectoryBuilder:
    """Runs the real tool cores in-process (no Ray needed to build data)."""

    def __init__(self, tools, normals: NormalSource, seed: int = 0):
        self.tools, self.normals, self.seed = tools, normals, seed

    def _call(self, name: str, args: Dict[str, Any], images=None, context=None) -> Dict[str, Any]:
        return self.tools[name].run_one(ToolRequest(args, images or {}, context or {}))

    def build(self, sample: Sample, variant: int = 0) -> Optional[Trajectory]:
        """One trajectory, or None when the real anomaly does not pass QE as its own type
        (it could not close an episode) or no failing earlier attempt could be made."""
        rng = np.random.default_rng([self.seed, variant, int(sample.image.stem), len(sample.defect), len(sample.category)])
        category, defect = sample.category, sample.defect
        ctx = {"category": category, "defect_type": defect}
        normal = self.normals.normal_for(sample, rng)
        anomaly = read_rgb(sample.image)
        if normal.shape != anomaly.shape:
            return None
        mask = read_mask(sample.masks[0])
        ys, xs = np.nonzero(mask)
        if not len(xs):
            return None
        h, w = mask.shape
        pad = max(2, int(0.25 * max(np.ptp(xs), np.ptp(ys))))
        box = (max(0, xs.min() - pad), max(0, ys.min() - pad), min(w, xs.max() + 1 + pad), min(h, ys.max() + 1 + pad))
        final_score = self._call("quality_eval", {}, {"normal": normal, "edited": anomaly}, {**ctx, "region_px": list(box)})
        if not final_score["pass"]:
            return None
        n = int(rng.integers(1, 4))
        name = defect.replace("_", " ")
        turns, obs, tools, images = [], [], [], [normal]

        def step(text, call, payload):
            turns.append(_turn(text, call))
            obs.append(payload)
            tools.append(call["name"])

        def qe_payload(k, score):
            return {"image_index": k, "location_score": score["location_score"], "quality_score": score["quality_score"],
                    "pass": score["pass"], "review": score["review"]}

        pg = self._call("prompt_gen", {}, None, ctx)["prompt"]
        step(THINKING["prompt"].format(name=name), {"name": "prompt_gen", "arguments": {}}, {"prompt": pg})
        # earlier attempts: a reduced prompt, or the full one on an unlucky seed; each must fail QE
        candidates = reduced_prompts(pg, [task_text(category, defect), pg]) + [pg]
        image_index = 0
        for m in range(n - 1):
            order = [candidates[int(i)] for i in rng.permutation(len(candidates))]
            for prompt in order:
                made = self._failing_attempt(prompt, normal, ctx, rng)
                if made is not None:
                    break
            else:
                continue
            edit, score = made
            image_index += 1
            images.append(edit["image"])
            think = THINKING["direct"] if prompt == pg and m == 0 else THINKING["plain"] if m == 0 else THINKING["revise"]
            step(think, {"name": "image_gen", "arguments": {"prompt": prompt}},
                 {"image_index": image_index, "region": edit["region"]})
            step(THINKING["check"].format(k=image_index), {"name": "quality_eval", "arguments": {"image_index": image_index}},
                 qe_payload(image_index, score))
            know = self._call("knowledge", {}, None, ctx)["text"]
            step(THINKING["failed"].format(k=image_index, name=name), {"name": "knowledge", "arguments": {}}, {"text": know})
        image_index += 1
        images.append(anomaly)
        step(THINKING["revise"] if image_index > 1 else THINKING["direct"], {"name": "image_gen", "arguments": {"prompt": pg}},
             {"image_index": image_index, "region": list(to_normalized(box, w, h))})
        step(THINKING["check"].format(k=image_index), {"name": "quality_eval", "arguments": {"image_index": image_index}},
             qe_payload(image_index, final_score))
        mg = self._call("mask_gen", {"image_index": image_index}, {"normal": normal, "edited": anomaly},
                        {"region_px": list(box)})
        step(THINKING["passed"].format(k=image_index), {"name": "mask_gen", "arguments": {"image_index": image_index}},
             {"image_index": image_index, "mask_area": mg["area"]})
        turns.append(_turn(THINKING["done"].format(k=image_index), answer={"status": "success", "final_image_index": image_index}))
        tools.append("answer")
        return Trajectory(f"{sample.category}-{sample.defect}-{sample.image.stem}-v{variant}", category,
                          defect, image_index, tools, turns, obs, str(sample.image), images)

    def _failing_attempt(self, prompt: str, normal: np.ndarray, ctx: Dict[str, Any], rng: np.random.Generator,
                         tries: int = 3):
        """(IG result, QE score) of an edit with ``prompt`` that fails QE, or None."""
        for _ in range(tries):
            edit = self._call("image_gen", {"prompt": prompt, "seed": int(rng.integers(0, 10_000))}, {"image": normal}, ctx)
            score = self._call("quality_eval", {}, {"normal": normal, "edited": edit["image"]},
                               {**ctx, "region_px": edit["region_px"]})
            if not score["pass"]:
                return edit, score
        return None


def tokenize(traj: Trajectory, tokenizer, renderer=None) -> Dict[str, List[int]]:
    """prompt_ids, response_ids and response_mask exactly as an episode would hold them.
    ``renderer`` (a VL policy's ``VisionRenderer``): the normal image in the task message and
    each generated image in its image_gen observation, as the episode shows them;
    ``shown_images`` lists them in token order."""
    user = task_text(traj.category, traj.defect_type) + (renderer.placeholder(traj.images[0]) if renderer else "")
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    ids, mask, shown = [], [], [0] if renderer else []
    for i, turn in enumerate(traj.turns):
        t = tokenizer.encode(turn, add_special_tokens=False)
        ids += t
        mask += [1] * len(t)
        if i < len(traj.observations):
            o = traj.observations[i]
            image = ""
            if renderer and traj.tools[i] == "image_gen":
                image = renderer.placeholder(traj.images[o["image_index"]])
                shown.append(o["image_index"])
            o = tokenizer.encode(observation_text(o, image), add_special_tokens=False)
            ids += o
            mask += [0] * len(o)
    return {"prompt_ids": list(prompt), "response_ids": ids, "response_mask": mask, "shown_images": shown}


def write_sft_dataset(trajs: Sequence[Trajectory], tokenizer, out: Path, renderer=None) -> Dict[str, Any]:
    """Parquet dataset plus a summary of the N and tool-sequence distributions. With a VL
    ``renderer`` the images an episode shows are written as PNGs (``image_paths``, relative
    to ``out``, indexed like the episode's images)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rollout.atomic import atomic_png

    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for t in trajs:
        tok = tokenize(t, tokenizer, renderer)
        paths = []
        if renderer:
            for k, img in enumerate(t.images):
                p = out / "images" / t.trajectory_id / f"{k}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                atomic_png(img, p)
                paths.append(str(p.relative_to(out)))
        rows.append({"trajectory_id": t.trajectory_id, "category": t.category, "defect_type": t.defect_type,
                     "n_generations": t.n_generations, "tools": t.tools, "turns": t.turns,
                     "observations": json.dumps(t.observations), "anomaly_path": t.anomaly_path, **tok,
                     "image_paths": paths})
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
