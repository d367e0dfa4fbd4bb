"""QE — quality evaluation: ``location_score`` 0–5, ``quality_score`` 0–5 and a one-sentence
``review`` that says what to change.

``metric`` (CPU default) measures proxies on the change between normal and edited image:
- location: share of the changed pixels that lie on the object and inside the asked region;
- visibility: how far the change stands above the normal image's local variation;
- seam: whether the change runs along the region border (a pasted box);
- agreement with the knowledge entry of the asked defect type: shape (line-like, blob-like
  or scattered), colour of the changed pixels, size of the changed area.
``vlm``: a VLM judge with a fixed rubric; scores parsed robustly (JSON, ``key: value`` or
the first two numbers); an answer with no scores is a ``bad_output`` error, not a guess.
The judge model is reached only through ``_generate``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from actors.defect_words import SHAPE_WORDS
from actors.errors import ToolError
from actors.knowledge_base import KnowledgeBase, KnowledgeEntry, load_knowledge_base
from actors.mask_gen import classical_foreground
from actors.procedural import COLOURS, SIZES
from actors.prompt_gen import task_entry
from actors.regions import SIDE_FRACTION, box_mask
from actors.schema import check_image
from actors.tool import BatchedTool, Tool, ToolRequest

SCHEMA = {
    "type": "object",
    "properties": {"image_index": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}
LINE_SHAPES = {"scratch", "cut", "crack", "fold"}
SCATTERED_SHAPES = {"contamination"}
GEOMETRIC_SHAPES = {"dent", "fold", "bent", "misplaced"}  # no colour of their own


def shape_group(shape: str) -> str:
    return "line" if shape in LINE_SHAPES else "scattered" if shape in SCATTERED_SHAPES else "blob"


@dataclass(frozen=True)
class Measurements:
    """What the metric judge measured; each factor in [0, 1]."""

    on_object: float
    in_region: float
    visibility: float
    seam_ok: float
    shape: float
    colour: float
    size: float
    measured_group: str
    measured_extent: float


def _measure(normal: np.ndarray, edited: np.ndarray, region, entry: KnowledgeEntry) -> Optional[Measurements]:
    diff = np.abs(edited.astype(np.float32) - normal.astype(np.float32)).max(axis=2)
    changed = diff > 0.08 * 255
    if changed.sum() < 3:
        return None
    h, w = changed.shape
    fg = classical_foreground(normal)
    on_object = float((changed & fg).sum() / changed.sum())
    in_region = float((changed & box_mask(region, changed.shape)).sum() / changed.sum()) if region else 1.0
    # visibility: change magnitude against the normal image's own local variation
    gray = normal.astype(np.float32).mean(axis=2)
    local_sd = float(np.sqrt(max(cv2.GaussianBlur(gray * gray, (0, 0), 2)[changed].mean()
                                 - cv2.GaussianBlur(gray, (0, 0), 2)[changed].mean() ** 2, 0)))
    visibility = float(np.clip((diff[changed].mean() - local_sd) / 45.0, 0, 1))
    seam_ok = 1.0
    if region:
        x0, y0, x1, y1 = region
        band = box_mask(region, changed.shape) & ~box_mask((x0 + 1, y0 + 1, max(x0 + 2, x1 - 1), max(y0 + 2, y1 - 1)), changed.shape)
        seam_ok = float(1.0 - np.clip(changed[band].mean() * 2.0, 0, 1))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    big = int(np.argmax(sizes)) + 1
    significant = int((sizes >= max(2, 0.05 * sizes.max())).sum())
    ys, xs = np.nonzero(labels == big)
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) if len(xs) > 2 else np.eye(2)
    ev = np.sort(np.linalg.eigvalsh(cov + 1e-3 * np.eye(2)))
    elongation = float(np.sqrt(ev[1] / ev[0]))
    if significant >= 3 and elongation < 4:
        group = "scattered"
    elif elongation >= 2.5:
        group = "line"
    else:
        group = "blob"
    shape = 1.0 if group == shape_group(entry.shape) else 0.25
    if entry.shape in GEOMETRIC_SHAPES or entry.colour == "mixed":
        colour = 1.0
    else:
        mean_rgb = edited[changed].astype(np.float32).mean(axis=0)
        colour = float(np.clip(1.0 - np.linalg.norm(mean_rgb - np.array(COLOURS[entry.colour], np.float32)) / 220.0, 0, 1))
    ys_all, xs_all = np.nonzero(changed)
    extent = float(max(xs_all.max() - xs_all.min() + 1, ys_all.max() - ys_all.min() + 1) / min(h, w))
    expected = SIDE_FRACTION[entry.size] * SIZES[entry.size]
    size = float(np.exp(-abs(np.log(extent / expected))))
    return Measurements(on_object, in_region, visibility, seam_ok, shape, colour, size, group, extent)


_WEIGHTS = {"visibility": 0.35, "seam_ok": 0.15, "shape": 0.25, "colour": 0.15, "size": 0.10}


def _review(m: Measurements, entry: KnowledgeEntry, location: float) -> str:
    if location < 3.0:
        return f"Move the region onto the {entry.category}: this defect belongs {entry.location}."
    gaps = {k: _WEIGHTS[k] * (1 - getattr(m, k)) for k in _WEIGHTS}
    worst = max(gaps, key=gaps.get)
    if gaps[worst] < 0.04:
        return "Realistic and well placed; keep this defect."
    word = SHAPE_WORDS[entry.shape][0]
    expected = SIDE_FRACTION[entry.size] * SIZES[entry.size]
    return {
        "visibility": "Make the defect more visible: use a sharper contrast or a stronger colour.",
        "seam_ok": "Blend the edit into its surroundings: the region border shows a seam.",
        "shape": f"The defect should look like a {word}, not a {m.measured_group}-shaped mark.",
        "colour": f"Use a {entry.colour} colour for the {entry.defect.replace('_', ' ')}.",
        "size": f"Make the defect {'larger' if m.measured_extent < expected else 'smaller'}: it should be {entry.size}.",
    }[worst]


class MetricJudge(Tool):
    name = "quality_eval"
    result_keys = {"location_score": "number", "quality_score": "number", "review": "str"}
    schema = SCHEMA
    required_images = ("normal", "edited")

    def __init__(self, kb: Optional[KnowledgeBase] = None):
        self.kb = kb or load_knowledge_base()

    def score(self, normal, edited, region, entry: KnowledgeEntry) -> Tuple[dict, Optional[Measurements]]:
        m = _measure(normal, edited, region, entry)
        if m is None:
            return {"location_score": 0.0, "quality_score": 0.0,
                    "review": "No visible change: describe a larger or higher-contrast defect."}, None
        location = 5.0 * m.on_object * (0.5 + 0.5 * m.in_region)
        quality = 5.0 * sum(w * getattr(m, k) for k, w in _WEIGHTS.items())
        return {"location_score": round(location, 2), "quality_score": round(quality, 2),
                "review": _review(m, entry, location)}, m

    def run_one(self, req: ToolRequest) -> dict:
        normal = check_image(self.name, "normal", req.images.get("normal"))
        edited = check_image(self.name, "edited", req.images.get("edited"))
        if normal.shape != edited.shape:
            raise ToolError("invalid_arguments", "edited image differs in size from the normal image", "image_index", self.name)
        entry = task_entry(self.kb, self.name, req)
        region = req.context.get("region_px")
        return self.score(normal, edited, tuple(region) if region is not None else None, entry)[0]


RUBRIC = (
    "You judge a synthetic industrial defect. The first image is the normal {category}; the second was edited "
    "to show a '{defect}' defect ({knowledge}). Score location_score 0-5 (is the defect where such defects "
    "occur, on the object?) and quality_score 0-5 (is it realistic, visible, well blended, the right type?). "
    'Answer as JSON: {{"location_score": x, "quality_score": y, "review": "one sentence on what to change"}}'
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


class VLMJudge(BatchedTool):
    name = "quality_eval"
    result_keys = {"location_score": "number", "quality_score": "number", "review": "str"}
    schema = SCHEMA
    required_images = ("normal", "edited")

    def __init__(self, model: str, max_new_tokens: int = 96, kb: Optional[KnowledgeBase] = None):
        self.kb = kb or load_knowledge_base()
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
            prompts.append(RUBRIC.format(category=e.category, defect=e.defect.replace("_", " "), knowledge=e.appearance))
            pairs.append((normal, edited))
        for i, text in zip(todo, self._generate(prompts, pairs) if todo else []):
            try:
                results[i] = parse_judge_output(text)
            except ValueError as err:
                results[i] = ToolError("bad_output", str(err), None, self.name)
        return results
