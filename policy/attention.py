"""Decode-step attention for grouped-query models on CPU.

transformers' SDPA path copies every cached key and value ``heads / kv_heads`` times
(``repeat_kv``) whenever an attention mask is given — and a padded batch always has one —
because torch's ``enable_gqa`` falls back to the math kernel under a mask. At one query
token per row that copy is most of a decode step's cost once contexts are long. Here the
``g`` query heads that share a key/value head become ``g`` query positions of that head:
one kernel call over the cache as stored, same result (every position sees the same keys,
the mask broadcasts over them). Prefill (several query tokens) keeps transformers' path.

Registered under ``GROUPED_SDPA`` for both the attention and the mask interfaces, so a
model opts in with ``model.set_attn_implementation(GROUPED_SDPA)``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

GROUPED_SDPA = "grouped_sdpa"


def grouped_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                           scaling: Optional[float] = None, **kwargs) -> Tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, head_dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or heads == kv_heads or dropout > 0.0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    folded = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    out = F.scaled_dot_product_attention(folded, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make ``GROUPED_SDPA`` known to transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_SDPA, sdpa_mask)
    return GROUPED_SDPA
