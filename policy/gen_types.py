"""The engine's request and result types and the helpers every decoder shares (the
whole-batch path in ``policy.engine``, the continuous one in ``policy.continuous``), so
that the engine imports the decoders and never the other way round."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence


@dataclass
class GenRequest:
    prompt_ids: List[int]
    sampling_params: Dict[str, Any]
    image_data: Optional[list] = None  # VL policies: the images of the token stream, in order


@dataclass
class GenResult:
    token_ids: List[int]
    log_probs: List[float]
    stop_reason: str  # completed | length
    constrained: bool = False  # sampled under the request's turn grammar


def token_budget(params: Dict[str, Any]) -> int:
    """``max_tokens`` of a request (128 when unset); at least one token must be asked for."""
    budget = int(params.get("max_tokens", 128))
    if budget < 1:
        raise ValueError(f"max_tokens must be >= 1, got {budget}")
    return budget


def prefill_buckets(new_tokens: Sequence[int], ratio: float = 2.0, slack: int = 32) -> List[List[int]]:
    """Row indices grouped by how many tokens each must prefill: sorted, and a bucket closes
    when a row needs more than ``ratio`` × the bucket's smallest + ``slack``. (Splitting by
    context length as well was measured and did not help: episodes advance in step.)"""
    buckets: List[List[int]] = []
    for i in sorted(range(len(new_tokens)), key=lambda r: new_tokens[r]):
        if buckets and new_tokens[i] <= ratio * new_tokens[buckets[-1][0]] + slack:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets
