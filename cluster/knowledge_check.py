"""Pre-flight: every (category, defect type) a command will ask the tools about has a
knowledge entry before Ray starts.

A pair without one either stops the command (``tools.knowledge.on_unknown=error``: one line
per pair saying how to add it, exit 2) or gets a derived entry (``derive``, the default),
written to ``<out>/knowledge_derived.json`` and appended to ``tools.knowledge.extra`` so the
tool actors load it too. A target category's real anomalies are measured only with
``tools.knowledge.derive_from_target=true`` (the published zero-shot setting forbids it);
otherwise its pairs get the name-only entry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from cluster.config import AppConfig

DERIVED_FILE = "knowledge_derived.json"


class KnowledgeError(ValueError):
    """Requested pairs have no knowledge and the config says not to derive it."""


@dataclass(frozen=True)
class Fallback:
    category: str
    defect: str
    source: str  # derived | name_only
    anomalies: int  # real anomalies measured
    why: str

    def line(self) -> str:
        return f"knowledge: {self.category}/{self.defect} has no entry; {self.why}"


def add_hint(category: str, defect: str) -> str:
    return (f"add it with `anomalyagent knowledge add --category {category} --defect {defect} --shape ... "
            f"--colour ... --size ... --location ... --appearance ... --out FILE` and pass tools.knowledge.extra=[FILE]")


def unknown_pairs(kb, ds, categories: Sequence[str]) -> List[Tuple[str, str]]:
    return [(c, d) for c in categories for d in ds.defect_types(c) if not kb.has(c, d)]


def _derive(ds, category: str, defect: str, allowed: bool):
    from actors.knowledge_derive import category_kind, derive_entry, name_only_entry
    from rollout.data.images import read_mask, read_rgb

    normals = ds.train(category)
    kind = category_kind(read_rgb(normals[0].image)) if normals else "object"
    samples = [s for s in ds.anomalies(category) if s.defect == defect and s.masks] if allowed else []
    if not samples:
        why = ("target category, tools.knowledge.derive_from_target=false" if not allowed
               else "no real anomalies with masks")
        return name_only_entry(category, defect, kind), 0, why
    anomalies = [(read_rgb(s.image), read_mask(s.masks[0]), None) for s in samples[:24]]
    return derive_entry(category, defect, anomalies, kind), len(anomalies), None


def prepare_knowledge(cfg: AppConfig, ds, categories: Sequence[str], targets: Sequence[str],
                      out: Path) -> Tuple[AppConfig, object, List[Fallback]]:
    """(config whose ``tools.knowledge.extra`` covers every pair, the merged knowledge base,
    the fallbacks taken). Raises ``KnowledgeError`` (on_unknown=error) or
    ``KnowledgeFileError`` (a bad user file) before any work."""
    from actors.knowledge_files import knowledge_with_overrides, load_knowledge, write_entries

    k = cfg.tools.knowledge
    kb, overrides = knowledge_with_overrides(tuple(k.extra))
    for entry, path in overrides:
        print(f"knowledge: {path} replaces the shipped entry for {entry.category}/{entry.defect}")
    unknown = unknown_pairs(kb, ds, categories)
    if not unknown:
        return cfg, kb, []
    if k.on_unknown == "error":
        raise KnowledgeError("\n".join(f"no knowledge entry for {c}/{d}: {add_hint(c, d)}, "
                                       f"or set tools.knowledge.on_unknown=derive" for c, d in unknown))
    entries, fallbacks = [], []
    for c, d in unknown:
        entry, n, why = _derive(ds, c, d, k.derive_from_target or c not in targets)
        words = f"{entry.size} {entry.colour} {entry.shape}"
        why = (f"derived from {n} real anomalies: {words}, {entry.location}" if entry.source == "derived"
               else f"from the name only ({why}): {words}")
        entries.append(entry)
        fallbacks.append(Fallback(c, d, entry.source, n, why))
        print(fallbacks[-1].line())
    path = write_entries(Path(out) / DERIVED_FILE, entries)
    cfg = copy.deepcopy(cfg)
    cfg.tools.knowledge.extra = [p for p in k.extra if Path(p) != path] + [str(path)]
    return cfg, load_knowledge(tuple(cfg.tools.knowledge.extra)), fallbacks
