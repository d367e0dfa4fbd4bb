"""Word-swap augmentation of SFT trajectories (ours; not in the paper).

Why: the tiny policy's tokenizer has ~1.8k tokens, but the trajectories of two source
categories use ~250 of them. The embeddings of the rest — target category names, their
colours and locations — are never trained as inputs, and a target episode full of them
knocks a 3-layer policy off its format (SFT without the swap, 1,000 steps, 64 tasks at
T = 1.0: 0.92 well-formed on fresh *source* tasks against 0.64 on *target* tasks). A swapped trajectory replaces the
content words of its task — the category and defect names and the words of the knowledge
entry that describe the defect — by random words built from vocabulary pieces, the same
word for the same word in the task, the thinking, the tool arguments and the tool results.
The policy thus learns to carry whichever words a task brings instead of memorizing the
source ones. Tool names, JSON keys, numbers and the fixed template words are kept, so the
episode's structure and the tool results' numbers stay exactly as the real tools gave them.

Swapped words must be copied from the context, which a tiny policy learns slowly: the
recipe that uses it (``sft.word_swap_fraction=0.5``, the default) trains 2,000 steps. A real
run's 7B policy has pretrained embeddings and does not need it: set the fraction to 0 there.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Dict, Iterable, List, Sequence

import numpy as np

from actors.defect_words import SHAPE_WORDS, SIZE_WORDS
from actors.knowledge_base import KnowledgeBase
from rollout.format import TOOL_NAMES
from rollout.prompts import SYSTEM_PROMPT, task_text

_WORD = re.compile(r"[A-Za-z]+")

FUNCTION_WORDS = frozenset(
    "a an the on of in at to and or with without near along across around about its it is are be by "
    "from into onto over under between inside outside within any anywhere every each one two no not "
    "as up down off out this that these those than then there here some".split())

# Words of the fixed texts around a task's own words: the builder's thinking lines, the QE
# reviews, the PG template's contrast words, the KB passage's labels and the observation
# keys. Swapping them would change the episode's template.
def template_text() -> str:
    from actors.quality_eval import REVIEWS
    from policy.sft_data import THINKING

    fixed = list(THINKING.values()) + list(REVIEWS.values())
    return " ".join(re.sub(r"\{[a-z_]+\}", " ", t) for t in fixed) + (
        " subtle clearly visible sharp high contrast low medium. Location Size Colour Contrast Shape. "
        "image_index location_score quality_score pass review region prompt text mask_area status success "
        "final_image_index name arguments query syn true false")


def structural_words() -> frozenset:
    """Words of the episode's structure (template, system prompt, tool names): never swapped."""
    texts = [template_text(), SYSTEM_PROMPT, task_text("", ""), " ".join(TOOL_NAMES)]
    return frozenset(w for t in texts for w in _WORD.findall(t))


def protected_words() -> frozenset:
    """Words a swap leaves in a description: structure, function words, the shared shape and
    size vocabulary (a category's or defect's own name is swapped even when it is a shape word)."""
    return frozenset(structural_words() | FUNCTION_WORDS | set(SHAPE_WORDS) | set(SIZE_WORDS))


def vocabulary_pieces(tokenizer, min_len: int = 2) -> List[str]:
    """Lower-case alphabetic pieces of the tokenizer's vocabulary: the stuff random words are made of,
    so that every such embedding is trained as an input."""
    pieces = set()
    for i in range(len(tokenizer)):
        s = tokenizer.decode([i]).strip()
        if len(s) >= min_len and s.isascii() and s.isalpha() and s.islower():
            pieces.add(s)
    return sorted(pieces)


class WordSwap:
    """Replaces a trajectory's content words, consistently, by random words."""

    def __init__(self, pieces: Sequence[str], kb: KnowledgeBase):
        self.structural, self.protected = structural_words(), protected_words()
        self.pieces = [p for p in pieces if p not in self.protected]
        if len(self.pieces) < 2:
            raise ValueError("word swap needs a tokenizer vocabulary with alphabetic pieces")
        self.kb = kb

    def content_words(self, category: str, defect: str) -> List[str]:
        """The category's and defect's own name parts (always), and the knowledge entry's
        descriptive words that are not template words."""
        names = [w for w in _WORD.findall(f"{category} {defect}") if w not in self.structural]
        entry = self.kb.get(category, defect)
        described = _WORD.findall(f"{entry.appearance} {entry.location} {entry.colour}")
        return list(dict.fromkeys(names + [w for w in described if w.lower() not in self.protected]))

    def mapping(self, words: Sequence[str], rng: np.random.Generator, avoid: Iterable[str] = ()) -> Dict[str, str]:
        """Distinct new words for ``words``, none of them a protected word or one in ``avoid``
        (the text's own words), so the swap can be undone exactly."""
        out: Dict[str, str] = {}
        taken = set(self.protected) | set(words) | set(avoid)
        for w in words:
            while True:
                k = 1 if rng.random() < 0.5 else 2
                new = "".join(self.pieces[int(i)] for i in rng.integers(len(self.pieces), size=k))
                if new not in taken:
                    break
            taken.add(new)
            out[w] = new
        return out

    def table(self, traj, rng: np.random.Generator) -> Dict[str, str]:
        """Old word -> new word for one trajectory (a ``policy.sft_data.Trajectory``)."""
        text = " ".join([traj.category, traj.defect_type, *traj.turns, json.dumps(traj.observations)])
        return self.mapping(self.content_words(traj.category, traj.defect_type), rng, _WORD.findall(text))

    @staticmethod
    def swap(traj, table: Dict[str, str]):
        """A copy of ``traj`` with every whole word in ``table`` replaced, in every text field."""
        if not table:
            return dataclasses.replace(traj, trajectory_id=f"{traj.trajectory_id}-swap")
        pattern = re.compile(r"(?<![A-Za-z])(" + "|".join(sorted(map(re.escape, table), key=len, reverse=True))
                             + r")(?![A-Za-z])")

        def sub(s: str) -> str:
            return pattern.sub(lambda m: table[m.group(1)], s)

        def sub_payload(v: Any) -> Any:
            if isinstance(v, str):
                return sub(v)
            if isinstance(v, dict):
                return {k: sub_payload(x) for k, x in v.items()}
            if isinstance(v, list):
                return [sub_payload(x) for x in v]
            return v

        return dataclasses.replace(
            traj, trajectory_id=f"{traj.trajectory_id}-swap", category=sub(traj.category),
            defect_type=sub(traj.defect_type), turns=[sub(t) for t in traj.turns],
            observations=[sub_payload(o) for o in traj.observations])

    def apply(self, traj, rng: np.random.Generator):
        return self.swap(traj, self.table(traj, rng))


def swap_some(trajs: Sequence, swapper: WordSwap, fraction: float, seed: int) -> List:
    """Each trajectory is swapped with probability ``fraction`` (deterministic in ``seed``)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sft.word_swap_fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng([seed, 4242])
    return [swapper.apply(t, rng) if rng.random() < fraction else t for t in trajs]
