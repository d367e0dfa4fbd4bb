"""A KV cache allocated once per batch run.

HF's ``DynamicCache`` appends each step's keys and values with ``torch.cat``, copying the
whole cache every decode step; the engine knows before the loop how long a batch can
grow (cached prefix + new prompt tokens + the largest token budget), so each layer here
writes into a buffer of that size and hands attention a view of the filled part.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a ``[batch, kv_heads, capacity, head_dim]`` buffer;
    grows (doubling) only if a caller writes past ``capacity``."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0
        self._k: Optional[torch.Tensor] = None
        self._v: Optional[torch.Tensor] = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, d = key_states.shape
        self._k = key_states.new_empty((b, h, self.capacity, d))
        self._v = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def _grow(self, needed: int) -> None:
        self.capacity = max(needed, 2 * self.capacity)
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], self.capacity, old.shape[-1]))
            new[:, :, :self.length] = old[:, :, :self.length]
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(end)
        self._k[:, :, self.length:end] = key_states
        self._v[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


def preallocated_cache(num_layers: int, capacity: int,
                       prefix: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor]]] = None) -> Cache:
    """A cache of ``num_layers`` buffers of ``capacity`` tokens, optionally starting with
    ``prefix`` (per layer ``(keys, values)``, ``[batch, kv_heads, length, head_dim]``)."""
    layers: List[PreallocatedLayer] = [PreallocatedLayer(capacity) for _ in range(num_layers)]
    for layer, kv in zip(layers, prefix or ()):
        layer.update(*kv)
    return Cache(layers=layers)
