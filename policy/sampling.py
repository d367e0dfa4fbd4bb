"""Next-token sampling for the HF engine, one temperature and top-p per row, and the
constrained rows of a batch (rollout/grammar.py): their logits outside the allowed ids are
masked before the softmax, so the sampled token and its log-prob are those of the
constrained distribution."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch

Setting = Union[float, torch.Tensor]
Allowed = Optional[Tuple[int, ...]]


class AllowedMasks:
    """Index tensors of allowed-id tuples, kept per tuple (a grammar hands out the same
    tuple object for the same state), and the masking of a batch's logits."""

    def __init__(self, max_entries: int = 4096):
        self._index: Dict[int, Tuple[Tuple[int, ...], torch.Tensor]] = {}
        self.max_entries = max_entries

    def _ids(self, allowed: Tuple[int, ...], device) -> torch.Tensor:
        hit = self._index.get(id(allowed))
        if hit is None or hit[0] is not allowed:
            if len(self._index) >= self.max_entries:
                self._index.clear()
            hit = self._index[id(allowed)] = (allowed, torch.tensor(allowed, dtype=torch.long, device=device))
        return hit[1]

    def apply(self, logits: torch.Tensor, allowed: Sequence[Allowed]) -> torch.Tensor:
        """``logits`` [n, vocab] with each constrained row's disallowed ids at -inf (a copy;
        rows with ``None`` or an empty set are left free)."""
        rows = [i for i, a in enumerate(allowed) if a]
        if not rows:
            return logits
        out = logits.float().clone()
        for i in rows:
            keep = self._ids(allowed[i], logits.device)
            row = torch.full_like(out[i], float("-inf"))
            row[keep] = out[i, keep]
            out[i] = row
        return out


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
