"""Knowledge files of the user's own: YAML or JSON entries in the shipped schema, validated
field by field and merged over the shipped base (``tools.knowledge.extra``).

A file holds either a list of entries or ``{"entries": [...]}`` (the shipped file's form).
Required fields: category, defect (``defect_type`` is accepted too), appearance, location,
size, colour, shape. Optional: kind (object), contrast (medium), dataset (user) and source
(user; ``derived`` and ``name_only`` mark entries that ``anomalyagent`` built itself).
A later file wins over an earlier one and over the shipped base.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from actors.knowledge_base import KnowledgeBase, KnowledgeEntry, load_knowledge_base
from actors.procedural import COLOURS, CONTRASTS, SHAPES, SIZES

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # a folder name of the dataset
REQUIRED = ("category", "defect", "appearance", "location", "size", "colour", "shape")
OPTIONAL = {"kind": "object", "contrast": "medium", "dataset": "user", "source": "user"}
ALLOWED = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "contrast": tuple(CONTRASTS),
           "kind": ("object", "texture"), "source": ("user", "derived", "name_only")}


class KnowledgeFileError(ValueError):
    """A knowledge file or entry is malformed; the message names the file, entry and field."""


def entry_from_dict(raw: Any, where: str = "entry") -> KnowledgeEntry:
    """One validated entry; ``where`` says where it came from, for the message."""
    if not isinstance(raw, dict):
        raise KnowledgeFileError(f"{where}: an entry must be a mapping of fields, got {type(raw).__name__}")
    raw = dict(raw)
    if "defect_type" in raw:
        if "defect" in raw:
            raise KnowledgeFileError(f"{where}: give 'defect' or 'defect_type', not both")
        raw["defect"] = raw.pop("defect_type")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise KnowledgeFileError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(REQUIRED + tuple(OPTIONAL))}")
    missing = [f for f in REQUIRED if f not in raw]
    if missing:
        raise KnowledgeFileError(f"{where}: missing field {missing[0]!r}")
    values = {**OPTIONAL, **raw}
    for field, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise KnowledgeFileError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
    for field in ("category", "defect"):
        if not NAME.match(values[field]):
            raise KnowledgeFileError(f"{where}: field {field!r}: {values[field]!r} is not a folder name "
                                     f"(letters, digits, '_', '-', '.'; at most 64)")
    for field, allowed in ALLOWED.items():
        if values[field] not in allowed:
            raise KnowledgeFileError(f"{where}: field {field!r}: {values[field]!r} is not one of {list(allowed)}")
    for field in ("appearance", "location"):
        if len(values[field]) > 300:
            raise KnowledgeFileError(f"{where}: field {field!r} is longer than 300 characters")
    return KnowledgeEntry(**{k: values[k].strip() for k in values})


def read_entries(path: str | Path) -> List[KnowledgeEntry]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise KnowledgeFileError(f"knowledge file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        raise KnowledgeFileError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'}: "
                                 f"{str(e).splitlines()[0]}") from None
    if isinstance(data, dict):
        data = data.get("entries")
    if data is None:
        data = []
    if not isinstance(data, list):
        raise KnowledgeFileError(f"{path}: expected a list of entries or a mapping with 'entries'")
    entries = []
    for i, raw in enumerate(data):
        pair = f" ({raw.get('category')}/{raw.get('defect', raw.get('defect_type'))})" if isinstance(raw, dict) else ""
        entries.append(entry_from_dict(raw, f"{path}: entry {i + 1}{pair}"))
    return entries


def _stamp(path: str) -> Tuple[str, int, int]:
    p = Path(path).expanduser()
    st = p.stat() if p.is_file() else None
    return (str(p), st.st_mtime_ns if st else 0, st.st_size if st else -1)


def load_knowledge(extra: Sequence[str] = ()) -> KnowledgeBase:
    """The shipped base with every file of ``extra`` merged over it, in order."""
    return knowledge_with_overrides(extra)[0]


def knowledge_with_overrides(extra: Sequence[str] = ()) -> Tuple[KnowledgeBase, List[Tuple[KnowledgeEntry, str]]]:
    """The merged base, and (replaced entry, file) for every pair a file took over."""
    return _load(tuple(_stamp(p) for p in extra))


@lru_cache(maxsize=8)
def _load(stamps: Tuple[Tuple[str, int, int], ...]):
    kb, overrides = load_knowledge_base(), []
    for path, _, _ in stamps:
        kb, replaced = kb.merged(read_entries(path))
        overrides += [(e, path) for e in replaced]
    return kb, overrides


def entry_to_dict(e: KnowledgeEntry) -> Dict[str, str]:
    return {k: getattr(e, k) for k in ("category", "defect", "kind", "shape", "colour", "size", "contrast",
                                       "location", "appearance", "dataset", "source")}


def write_entries(path: str | Path, entries: Sequence[KnowledgeEntry]) -> Path:
    """Write ``entries`` to ``path`` (YAML for .yaml/.yml, JSON otherwise), atomically."""
    path = Path(path).expanduser()
    data = {"version": 1, "entries": [entry_to_dict(e) for e in entries]}
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def add_entry(path: str | Path, entry: KnowledgeEntry) -> bool:
    """Add ``entry`` to the file at ``path`` (created if missing); True when it replaced an
    entry of the same pair in that file."""
    path = Path(path).expanduser()
    entries = read_entries(path) if path.is_file() else []
    kept = [e for e in entries if (e.category, e.defect) != (entry.category, entry.defect)]
    write_entries(path, kept + [entry])
    return len(kept) < len(entries)
