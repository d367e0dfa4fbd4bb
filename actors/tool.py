"""The contract every tool core meets (no Ray here).

A tool receives ``ToolRequest``s — the policy's JSON ``arguments``, the images the
episode resolved for it, and the task ``context`` (category, defect type, the region and
prompt behind an edited image) — and answers each with a dict of JSON values, plus numpy
arrays for images and masks. ``run_batch`` must equal ``run_one`` applied to each request;
tools whose model batches (IG, QE-VLM) override it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

import numpy as np

from actors.errors import ToolError


@dataclass
class ToolRequest:
    arguments: Dict[str, Any]
    images: Dict[str, np.ndarray] = field(default_factory=dict)
    context: Dict[str, Any] = field(default_factory=dict)


class Tool(ABC):
    name: str = "tool"
    schema: dict = {"type": "object"}
    required_images: Sequence[str] = ()
    result_keys: Dict[str, str] = {}  # key -> kind ("array", "list", "number", "str", "bool") the episode reads

    @abstractmethod
    def run_one(self, req: ToolRequest) -> dict:
        """Answer one request (raise ``ToolError`` for a request the tool cannot serve)."""

    def run_batch(self, reqs: Sequence[ToolRequest]) -> List[Any]:
        """One result per request; a ``ToolError`` for a request is returned in its place."""
        out: List[Any] = []
        for r in reqs:
            try:
                out.append(self.run_one(r))
            except ToolError as e:
                out.append(e)
        return out


class BatchedTool(Tool):
    """A tool whose model batches: it implements ``run_batch``; ``run_one`` is a batch of one."""

    @abstractmethod
    def run_batch(self, reqs: Sequence[ToolRequest]) -> List[Any]:
        """One result (or ``ToolError``) per request, from one model call where possible."""

    def run_one(self, req: ToolRequest) -> dict:
        out = self.run_batch([req])[0]
        if isinstance(out, ToolError):
            raise out
        return out
