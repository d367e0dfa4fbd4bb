"""What our engine answers on verl's LLM-server interface (``generate`` → ``TokenOutput``).

The engine knows verl's server types and nothing of the agent loop that calls it."""
from __future__ import annotations

from typing import List

from verl.workers.rollout.replica import TokenOutput

from rollout.grammar import CONSTRAINED_FIELD


def token_output(token_ids: List[int], log_probs: List[float], stop_reason: str, weights_version: int = 0,
                 constrained: bool = False) -> TokenOutput:
    """``constrained``: sampled under the request's turn grammar (a server that ignores the
    grammar, e.g. a plain vLLM one, leaves the flag out, which reads as False)."""
    return TokenOutput(token_ids=token_ids, log_probs=log_probs, stop_reason=stop_reason,
                       extra_fields={"global_steps": weights_version, CONSTRAINED_FIELD: constrained})
