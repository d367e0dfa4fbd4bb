"""Keys and values of earlier turns, reused by the next turn of the same episode.

Turn k+1's prompt is turn k's prompt + the policy's reply + the tool's observation, so all
but the new tokens were already run through the model. The engine stores each row's KV
after generating and, for a new request, takes the entry with the longest common token
prefix (an episode's own history, or the system prompt and task its G siblings share), so
only the rest is prefilled. vLLM's automatic prefix caching does this on GPUs in blocks;
this is the per-sequence version for the HF engine.

Entries are evicted least-recently-used beyond ``max_tokens``; an entry that is a prefix of
a newly stored one is dropped at once (superseded). New weights invalidate everything.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

KV = List[Tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each (heads, tokens, head_dim)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    def __init__(self, max_tokens: int):
        if max_tokens < 0:
            raise ValueError("policy.engine.prefix_cache_tokens must be >= 0")
        self.max_tokens = max_tokens
        self._entries: "OrderedDict[int, Tuple[np.ndarray, KV]]" = OrderedDict()
        self._next = 0
        self.tokens = 0
        self.hits = self.lookups = self.reused_tokens = self.prompt_tokens = 0

    @property
    def enabled(self) -> bool:
        return self.max_tokens > 0

    def lookup(self, prompt: Sequence[int]) -> Tuple[int, Optional[KV]]:
        """(n, kv of the first n prompt tokens); n < len(prompt), so the last prompt token
        is always run (its logits start the reply). (0, None) when nothing matches."""
        self.lookups += 1
        self.prompt_tokens += len(prompt)
        if not self.enabled or not self._entries or len(prompt) < 2:
            return 0, None
        ids = np.asarray(prompt, dtype=np.int64)
        best, best_key = 0, None
        for key, (cached, _) in self._entries.items():
            n = common_prefix(cached, ids)
            if n > best:
                best, best_key = n, key
        best = min(best, len(prompt) - 1)
        if best_key is None or best == 0:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        kv = self._entries[best_key][1]
        return best, [(k[:, :best], v[:, :best]) for k, v in kv]

    def store(self, ids: Sequence[int], kv: KV) -> None:
        """Keep ``kv`` (exactly ``len(ids)`` positions) for ``ids``."""
        if not self.enabled or len(ids) == 0 or len(ids) > self.max_tokens:
            return
        arr = np.asarray(ids, dtype=np.int64)
        for key in [k for k, (cached, _) in self._entries.items()
                    if len(cached) <= len(arr) and common_prefix(cached, arr) == len(cached)]:
            self._drop(key)
        self._entries[self._next] = (arr, kv)
        self._next += 1
        self.tokens += len(arr)
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: int) -> None:
        arr, _ = self._entries.pop(key)
        self.tokens -= len(arr)

    def stats(self) -> dict:
        return {"prefix_hits": self.hits, "prefix_lookups": self.lookups, "prefix_entries": len(self),
                "prefix_reused_fraction": self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0}
