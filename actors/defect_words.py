"""The words of an editing prompt that the procedural IG backend responds to, and the
reverse: a prompt written from a knowledge entry. One table serves both directions."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from actors.procedural import COLOURS, CONTRASTS, SIZES, DefectSpec

SHAPE_WORDS: Dict[str, Tuple[str, ...]] = {
    "scratch": ("scratch", "scratches", "line", "streak", "thread", "stroke", "strip"),
    "crack": ("crack", "cracks", "fracture", "split", "breakage"),
    "hole": ("hole", "holes", "pit", "puncture", "poke", "pore"),
    "spot": ("spot", "stain", "blot", "discoloured", "discolored", "discolor", "patch", "smear", "liquid", "oil", "burnt", "glue", "print", "melt"),
    "dent": ("dent", "squeeze", "squeezed", "deformed", "misshape", "bump", "rough", "damaged"),
    "contamination": ("contamination", "particle", "particles", "dirt", "debris", "dust", "speck", "specks"),
    "missing": ("missing", "broken", "chip", "chunk", "gap", "break"),
    "fold": ("fold", "crease", "wrinkle"),
    "cut": ("cut", "gash", "slit", "incision"),
    "bent": ("bent", "bend", "warped"),
    "misplaced": ("misplaced", "flip", "flipped", "swap", "swapped", "shifted", "wrong"),
}
COLOUR_SYNONYMS = {"grey": "gray", "rust": "brown", "rusty": "brown", "silver": "gray", "golden": "yellow",
                   "transparent": "pale", "light": "pale", "bright": "white", "darker": "dark"}
SIZE_WORDS = {"tiny": "small", "small": "small", "little": "small", "fine": "small", "thin": "small",
              "medium": "medium", "moderate": "medium", "large": "large", "big": "large", "long": "large", "wide": "large"}
# "low"/"high" count only before "contrast"; "medium" is a size word
CONTRAST_WORDS = {"faint": "low", "subtle": "low", "slight": "low",
                  "clear": "medium", "clearly": "medium", "visible": "medium",
                  "strong": "high", "bold": "high", "sharp": "high", "vivid": "high"}
_WORD_TO_SHAPE = {w: s for s, words in SHAPE_WORDS.items() for w in words}


@dataclass(frozen=True)
class PromptWords:
    shape: str
    colour: str
    size: str
    contrast: str
    matched: Tuple[str, ...]  # which of shape/colour/size/contrast the prompt stated

    def spec(self) -> DefectSpec:
        return DefectSpec(self.shape, COLOURS[self.colour], SIZES[self.size], CONTRASTS[self.contrast])


def parse_prompt(prompt: str, default_shape: str = "spot") -> PromptWords:
    """The first shape, colour, size and contrast word of the prompt, with defaults."""
    words = re.findall(r"[a-z]+", prompt.lower())
    found: Dict[str, Optional[str]] = {"shape": None, "colour": None, "size": None, "contrast": None}
    for i, w in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        candidates = {
            "shape": _WORD_TO_SHAPE.get(w),
            "colour": COLOUR_SYNONYMS.get(w, w) if COLOUR_SYNONYMS.get(w, w) in COLOURS else None,
            "size": SIZE_WORDS.get(w),
            "contrast": w if (w in ("low", "high") and following == "contrast") else CONTRAST_WORDS.get(w),
        }
        for key, value in candidates.items():
            if found[key] is None and value is not None:
                found[key] = value
    matched = tuple(k for k, v in found.items() if v is not None)
    return PromptWords(found["shape"] or default_shape, found["colour"] or "dark", found["size"] or "medium",
                       found["contrast"] or "medium", matched)


def prompt_for(entry, simple: bool = False) -> str:
    """The editing prompt for a knowledge entry; ``simple`` omits colour, size and contrast."""
    name = entry.defect.replace("_", " ")
    shape = SHAPE_WORDS[entry.shape][0]
    if simple:
        return f"a {shape} on the {entry.category}"
    contrast = {"low": "subtle", "medium": "clearly visible", "high": "sharp high contrast"}[entry.contrast]
    return f"a {entry.size} {entry.colour} {shape} ({name}) {entry.location}, {contrast}"
