"""QE — quality evaluation: ``location_score`` 0–5, ``quality_score`` 0–5, ``pass`` and a
one-sentence ``review`` that names what to change.

A generation passes when *both* scores reach ``pass_score`` (``passes``): a defect of the
right type in the wrong place fails, and so does a well-placed mark of the wrong type —
the mean of the two used to let a blob asked to be a crack through.

``metric`` (CPU default) scores the *requested* type from measurements
(actors/defect_measure.py): location is the share of the change on the object and inside
the asked region; quality is visibility × shape × colour × size (× seam), a product, so a
single wrong property fails the whole and the review names it in the words the IG
understands. Calibrated on the real anomalies of a dataset with ``anomalyagent bench judge``.
``vlm``: a VLM judge with the same rubric in words; scores parsed robustly (JSON, ``key:
value`` or the first two numbers); an answer with no scores is a ``bad_output`` error, not a
guess. The judge model is reached only through ``_generate``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from actors.defect_measure import Match, Measurement, expected_extent, match, measure, shape_group
from actors.defect_words import SHAPE_WORDS
from actors.errors import ToolError
from actors.knowledge_base import KnowledgeBase, KnowledgeEntry, load_knowledge_base
from actors.mask_gen import classical_foreground
from actors.prompt_gen import task_entry
from actors.regions import box_mask
from actors.schema import check_image
from actors.tool import BatchedTool, Tool, ToolRequest

SCHEMA = {
    "type": "object",
    "properties": {"image_index": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}
PASS_SCORE = 3.5
RESULT_KEYS = {"location_score": "number", "quality_score": "number", "review": "str", "pass": "bool"}


def passes(score: Dict[str, object], pass_score: float = PASS_SCORE) -> bool:
    """Both scores at or above ``pass_score``."""
    return min(float(score["location_score"]), float(score["quality_score"])) >= pass_score


@dataclass(frozen=True)
class Verdict:
    """The metric judge's scores for one (image, requested type), with what it measured."""

    location_score: float
    quality_score: float
    review: str
    passed: bool
    measurement: Optional[Measurement]
    match: Optional[Match]

    def result(self) -> dict:
        return {"location_score": self.location_score, "quality_score": self.quality_score,
                "review": self.review, "pass": self.passed}


def _seam(m: Measurement, region) -> float:
    """1 unless the change runs along the region border (a pasted box)."""
    if region is None:
        return 1.0
    x0, y0, x1, y1 = region
    band = box_mask(region, m.changed.shape) & ~box_mask((x0 + 1, y0 + 1, max(x0 + 2, x1 - 1), max(y0 + 2, y1 - 1)),
                                                        m.changed.shape)
    share = float(m.changed[band].mean()) if band.any() else 0.0
    return float(np.clip(1.0 - 2.0 * max(0.0, share - 0.3), 0.0, 1.0))


# The review sentences (word swap keeps their words: policy/word_swap.py reads this table).
REVIEWS = {
    "none": "No visible change: describe a larger or higher-contrast defect.",
    "off_object": "Move the defect onto the {category}: it belongs {location}.",
    "outside": "Keep the defect inside the asked region.",
    "good": "Realistic and well placed; keep this defect.",
    "visibility": "Make the defect more visible: sharp high contrast.",
    "shape": "The defect should look like a {word} ({group}), not a {measured}-shaped mark.",
    "colour": "Use a {colour} colour for the {name}.",
    "size": "Make the defect {direction}: it should be {size}.",
    "seam": "Blend the edit into its surroundings: the region border shows a seam.",
}


def _review(m: Measurement, t: Match, seam: float, entry: KnowledgeEntry, location: float, quality: float,
            pass_score: float) -> str:
    if location < pass_score:
        if m.on_object < 0.85:
            return REVIEWS["off_object"].format(category=entry.category, location=entry.location)
        return REVIEWS["outside"]
    if quality >= pass_score:
        return REVIEWS["good"]
    worst, _ = min([t.worst(), ("seam", seam)], key=lambda kv: kv[1])
    larger = m.extent < expected_extent(entry.shape, entry.size)
    return REVIEWS[worst].format(word=SHAPE_WORDS[entry.shape][0], group=t.expected_group, measured=m.group,
                                 colour=entry.colour, name=entry.defect.replace("_", " "),
                                 direction="larger" if larger else "smaller", size=entry.size)


def judge(normal: np.ndarray, edited: np.ndarray, region, entry: KnowledgeEntry, pass_score: float = PASS_SCORE,
          foreground: Optional[np.ndarray] = None) -> Verdict:
    """Score ``edited`` as a defect of ``entry``'s type on ``normal`` (the metric rubric)."""
    fg = classical_foreground(normal) if foreground is None else foreground
    m = measure(normal, edited, region, fg)
    if m is None:
        return Verdict(0.0, 0.0, REVIEWS["none"], False, None, None)
    t = match(m, entry)
    seam = _seam(m, region)
    location = round(5.0 * min(1.0, m.on_object / 0.85) * min(1.0, m.in_region / 0.9), 2)
    quality = round(5.0 * t.visibility * t.fidelity * seam, 2)
    passed = min(location, quality) >= pass_score
    return Verdict(location, quality, _review(m, t, seam, entry, location, quality, pass_score), passed, m, t)


class MetricJudge(Tool):
    name = "quality_eval"
    result_keys = RESULT_KEYS
    schema = SCHEMA
    required_images = ("normal", "edited")

    def __init__(self, kb: Optional[KnowledgeBase] = None, pass_score: float = PASS_SCORE):
        self.kb = kb or load_knowledge_base()
        self.pass_score = pass_score

    def score(self, normal, edited, region, entry: KnowledgeEntry) -> Verdict:
        return judge(normal, edited, region, entry, self.pass_score)

    def run_one(self, req: ToolRequest) -> dict:
        normal = check_image(self.name, "normal", req.images.get("normal"))
        edited = check_image(self.name, "edited", req.images.get("edited"))
        if normal.shape != edited.shape:
            raise ToolError("invalid_arguments", "edited image differs in size from the normal image", "image_index", self.name)
        entry = task_entry(self.kb, self.name, req)
        region = req.context.get("region_px")
        return self.score(normal, edited, tuple(region) if region is not None else None, entry).result()


RUBRIC = (
    "You judge a synthetic industrial defect. The first image is the normal {category}; the second was edited "
    "to show a '{defect}' defect ({knowledge}). Score location_score 0-5: is the change on the object, where "
    "such defects occur, and nowhere else? Score quality_score 0-5: is it clearly visible, of the right shape "
    "({shape}), colour ({colour}) and size ({size}), and blended without a seam? A defect of another type, or no "
    "visible change, scores below {pass_score} whatever its realism. "
    'Answer as JSON: {{"location_score": x, "quality_score": y, "review": "one sentence naming what to change"}}'
)
_NUM = r"(\d+(?:\.\d+)?)"


def parse_judge_output(text: str) -> Dict[str, object]:
    """Scores from a judge's free text; raises ``ValueError`` when no scores can be found."""
    scores: Dict[str, float] = {}
    review = ""
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(m.group())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            for key in ("location_score", "quality_score"):
                if isinstance(obj.get(key), (int, float)) and not isinstance(obj.get(key), bool):
                    scores.setdefault(key, float(obj[key]))
            if isinstance(obj.get("review"), str):
                review = review or obj["review"]
    for key, pattern in (("location_score", r"location[_ ]?(?:score)?\s*[:=]?\s*"), ("quality_score", r"quality[_ ]?(?:score)?\s*[:=]?\s*")):
        if key not in scores:
            m = re.search(pattern + _NUM, text, re.IGNORECASE)
            if m:
                scores[key] = float(m.group(1))
    if len(scores) < 2:
        nums = [float(x) for x in re.findall(_NUM, text) if float(x) <= 5]
        if len(nums) >= 2 and not scores:
            scores = {"location_score": nums[0], "quality_score": nums[1]}
    if len(scores) < 2:
        raise ValueError(f"no scores in judge output: {text[:120]!r}")
    if not review:
        m = re.search(r"review\W+([^\"\n]+)", text, re.IGNORECASE)
        review = m.group(1).strip() if m else "No review given."
    return {"location_score": round(min(max(scores["location_score"], 0.0), 5.0), 2),
            "quality_score": round(min(max(scores["quality_score"], 0.0), 5.0), 2),
            "review": review[:300]}


def rubric(entry: KnowledgeEntry, pass_score: float = PASS_SCORE) -> str:
    return RUBRIC.format(category=entry.category, defect=entry.defect.replace("_", " "), knowledge=entry.appearance,
                         shape=f"{SHAPE_WORDS[entry.shape][0]}, {shape_group(entry.shape)}-shaped", colour=entry.colour,
                         size=entry.size, pass_score=pass_score)


class VLMJudge(BatchedTool):
    name = "quality_eval"
    result_keys = RESULT_KEYS
    schema = SCHEMA
    required_images = ("normal", "edited")

    def __init__(self, model: str, max_new_tokens: int = 96, kb: Optional[KnowledgeBase] = None,
                 pass_score: float = PASS_SCORE):
        self.kb = kb or load_knowledge_base()
        self.pass_score = pass_score
        self.model_path, self.max_new_tokens = model, max_new_tokens
        self._model = self._proc = None

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self._proc = AutoProcessor.from_pretrained(self.model_path)
            self._proc.tokenizer.padding_side = "left"
            self._model = AutoModelForImageTextToText.from_pretrained(self.model_path).eval()

    def _generate(self, prompts: List[str], image_pairs: List[Tuple[np.ndarray, np.ndarray]]) -> List[str]:
        import torch
        from PIL import Image

        self._load()
        texts = [self._proc.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": p}]}],
            add_generation_prompt=True, tokenize=False) for p in prompts]
        images = [Image.fromarray(im) for pair in image_pairs for im in pair]
        inputs = self._proc(text=texts, images=images, return_tensors="pt", padding=True).to(self._model.device)
        with torch.no_grad():
            out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self._proc.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def run_batch(self, reqs: Sequence[ToolRequest]) -> list:
        results: list = [None] * len(reqs)
        todo, prompts, pairs = [], [], []
        for i, r in enumerate(reqs):
            try:
                normal = check_image(self.name, "normal", r.images.get("normal"))
                edited = check_image(self.name, "edited", r.images.get("edited"))
                e = task_entry(self.kb, self.name, r)
            except ToolError as err:
                results[i] = err
                continue
            todo.append(i)
            prompts.append(rubric(e, self.pass_score))
            pairs.append((normal, edited))
        for i, text in zip(todo, self._generate(prompts, pairs) if todo else []):
            try:
                out = parse_judge_output(text)
                results[i] = {**out, "pass": passes(out, self.pass_score)}
            except ValueError as err:
                results[i] = ToolError("bad_output", str(err), None, self.name)
        return results
