"""Our knowledge base of defect appearance (``knowledge_base.json``, shipped in the package).

Every MVTec AD category and defect type (15 / 73, names as in the dataset), VisA's twelve
objects with their annotated defect types, and the synthetic categories used offline. Each
entry says what the defect looks like, where it occurs, its size, colour, contrast and a
shape word from ``actors.procedural.SHAPES``. Look-up by name lives here; retrieval by
embedding (KR) builds on it in ``actors.knowledge``. Users extend it with files of their own
(``actors.knowledge_files``); pairs nobody described get a derived entry
(``actors.knowledge_derive``). ``KnowledgeEntry.source`` says which of these an entry is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class KnowledgeEntry:
    dataset: str
    category: str
    kind: str  # object | texture
    defect: str
    shape: str
    colour: str
    size: str  # small | medium | large
    contrast: str  # low | medium | high
    location: str
    appearance: str
    source: str = "shipped"  # shipped | user | derived | name_only (not part of the text)

    def text(self) -> str:
        """One passage describing the defect, used for retrieval and prompts."""
        return (
            f"{self.category} {self.defect.replace('_', ' ')}: {self.appearance}. "
            f"Location: {self.location}. Size: {self.size}. Colour: {self.colour}. "
            f"Contrast: {self.contrast}. Shape: {self.shape}."
        )


class UnknownDefect(KeyError):
    """The knowledge base has no entry for this category/defect type."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]


SOURCES = ("shipped", "user", "derived", "name_only")


class KnowledgeBase:
    def __init__(self, entries: List[KnowledgeEntry]):
        self.entries = entries
        self._by_key: Dict[Tuple[str, str], KnowledgeEntry] = {(e.category, e.defect): e for e in entries}

    def merged(self, extra: List[KnowledgeEntry]) -> Tuple["KnowledgeBase", List[KnowledgeEntry]]:
        """This base with ``extra`` added; an extra entry replaces one of the same pair.
        Returns the new base and the entries that were replaced."""
        replaced = [self._by_key[(e.category, e.defect)] for e in extra if (e.category, e.defect) in self._by_key]
        keys = {(e.category, e.defect) for e in extra}
        kept = [e for e in self.entries if (e.category, e.defect) not in keys]
        return KnowledgeBase(kept + list(extra)), replaced

    def source_of(self, category: str, defect: str) -> str:
        """How the entry of a pair was obtained; "unknown" when there is none."""
        e = self._by_key.get((category, defect))
        return e.source if e is not None else "unknown"

    def __len__(self) -> int:
        return len(self.entries)

    def categories(self, dataset: Optional[str] = None) -> List[str]:
        return sorted({e.category for e in self.entries if dataset is None or e.dataset == dataset})

    def defects(self, category: str) -> List[str]:
        out = sorted(d for (c, d) in self._by_key if c == category)
        if not out:
            raise UnknownDefect(f"unknown category {category!r}")
        return out

    def has(self, category: str, defect: str) -> bool:
        return (category, defect) in self._by_key

    def get(self, category: str, defect: str) -> KnowledgeEntry:
        try:
            return self._by_key[(category, defect)]
        except KeyError:
            if category not in {c for c, _ in self._by_key}:
                raise UnknownDefect(f"unknown category {category!r}") from None
            raise UnknownDefect(
                f"unknown defect type {defect!r} for category {category!r}; known: {', '.join(self.defects(category))}"
            ) from None


@lru_cache(maxsize=1)
def load_knowledge_base() -> KnowledgeBase:
    raw = json.loads(resources.files("actors").joinpath("knowledge_base.json").read_text())
    return KnowledgeBase([KnowledgeEntry(**e) for e in raw["entries"]])
