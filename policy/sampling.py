"""Next-token sampling for the HF engine, one temperature and top-p per row."""
from __future__ import annotations

from typing import Tuple, Union

import torch

Setting = Union[float, torch.Tensor]


def _per_row(value: Setting, n: int, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float32)
    return torch.full((n,), float(value), device=device)


def sample_next(logits: torch.Tensor, temperature: Setting, top_p: Setting,
                generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token per row of ``logits`` [n, vocab] and its log-prob under the distribution it was
    drawn from (softmax of logits / T, top-p applied to the draw, not to the log-prob).
    Temperature <= 0 is greedy. Inverse-CDF sampling: one uniform per row instead of
    ``torch.multinomial``'s per-call set-up — same distribution."""
    n = logits.shape[0]
    temp = _per_row(temperature, n, logits.device)
    nucleus = _per_row(top_p, n, logits.device)
    greedy = temp <= 0
    logp = torch.log_softmax(logits.float() / temp.clamp(min=1e-5)[:, None], dim=-1)
    if bool(greedy.all()):
        tok = logp.argmax(-1)
    else:
        probs = logp.exp()
        if bool((nucleus < 1.0).any()):
            sorted_p, order = probs.sort(-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < nucleus[:, None]
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
        cdf = probs.cumsum(-1)
        u = torch.rand((n, 1), generator=generator, device=logits.device) * cdf[:, -1:]
        tok = torch.searchsorted(cdf, u).squeeze(-1).clamp(max=probs.shape[-1] - 1)
        tok = torch.where(greedy, logp.argmax(-1), tok)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
