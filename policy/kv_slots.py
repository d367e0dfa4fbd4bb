"""KV slots for continuous batching: one slot per running sequence, each holding its keys
and values from column 0 up to its own length (right-padded, no holes).

A decode step writes each row's new key/value at that row's own length and attends over
columns ``[0, longest + 1)`` with a mask of each row's filled columns. Sequences join by
writing their prefilled keys/values into a free slot and leave by moving the last slot
into theirs, so neither touches the other rows — the point of the layout: a left-padded
batch would have to shift every row whenever a longer sequence joins.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from transformers.cache_utils import Cache, DynamicLayer


class KVSlots:
    def __init__(self, num_layers: int, rows: int, kv_heads: int, head_dim: int, dtype=torch.float32,
                 device="cpu", width: int = 256):
        shape = (rows, kv_heads, width, head_dim)
        self.keys: List[torch.Tensor] = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values: List[torch.Tensor] = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.mask = torch.zeros((rows, width), dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.rows, self.width, self.n = rows, width, 0
        self.step_width = 0  # columns the decode step in progress attends over

    @property
    def free(self) -> int:
        return self.rows - self.n

    def _grow(self, needed: int) -> None:
        width = max(needed, 2 * self.width)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_zeros((*old.shape[:2], width, old.shape[-1]))
                new[:, :, :self.width] = old
                store[i] = new
        mask = self.mask.new_zeros((self.rows, width))
        mask[:, :self.width] = self.mask
        self.mask, self.width = mask, width

    def add(self, kv: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> int:
        """A new sequence from per-layer ``(keys, values)`` of shape [kv_heads, length, head_dim];
        returns its slot."""
        if not self.free:
            raise RuntimeError("no free KV slot")
        length = kv[0][0].shape[1]
        if length + 1 > self.width:
            self._grow(length + 1)
        slot = self.n
        for layer, (k, v) in enumerate(kv):
            self.keys[layer][slot, :, :length] = k
            self.values[layer][slot, :, :length] = v
        self.mask[slot].zero_()
        self.mask[slot, :length] = 1
        self.lengths[slot] = length
        self.n += 1
        return slot

    def remove(self, slot: int) -> None:
        """Frees ``slot``; the last sequence moves into it (callers mirror the move)."""
        last = self.n - 1
        if slot != last:
            length = int(self.lengths[last])
            for store in (self.keys, self.values):
                for t in store:
                    t[slot, :, :length] = t[last, :, :length]
            self.mask[slot] = self.mask[last]
            self.lengths[slot] = self.lengths[last]
        self.n = last

    def sequence(self, slot: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Copies of one slot's filled keys/values, per layer [kv_heads, length, head_dim]."""
        length = int(self.lengths[slot])
        return [(k[slot, :, :length].clone(), v[slot, :, :length].clone()) for k, v in zip(self.keys, self.values)]

    def begin_step(self) -> Tuple[Cache, torch.Tensor, torch.Tensor]:
        """Cache view, attention mask and positions for one new token per live row."""
        n = self.n
        lengths = self.lengths[:n]
        self.step_width = int(lengths.max()) + 1
        if self.step_width > self.width:
            self._grow(self.step_width)
        self.mask[torch.arange(n, device=lengths.device), lengths] = 1
        cache = Cache(layers=[_SlotLayer(self, i) for i in range(len(self.keys))])
        return cache, self.mask[:n, :self.step_width], lengths.clone()[:, None]

    def end_step(self) -> None:
        self.lengths[:self.n] += 1


class _SlotLayer(DynamicLayer):
    """One layer of the step's cache: writes each row's new key/value at its own length."""

    def __init__(self, slots: KVSlots, layer: int):
        super().__init__()
        self.slots, self.layer, self.is_initialized = slots, layer, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        s = self.slots
        rows = torch.arange(s.n, device=key_states.device)
        cols = s.lengths[:s.n]
        k, v = s.keys[self.layer], s.values[self.layer]
        k[rows, :, cols] = key_states[:, :, 0]
        v[rows, :, cols] = value_states[:, :, 0]
        return k[:s.n, :, :s.step_width], v[:s.n, :, :s.step_width]

    def get_seq_length(self) -> int:
        return self.slots.step_width - 1
