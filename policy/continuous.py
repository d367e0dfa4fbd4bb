"""Continuous (iteration-level) batching for the HF engine's text path: requests join the
running batch between decode steps and leave it the step they finish.

With whole-batch decoding a request that arrives while a batch runs waits for that
batch's longest row (a full turn of up to ``max_turn_tokens`` steps); episodes then
drift into several smaller batches that take turns on the engine. Here every waiting
request is prefilled and joins at the next step, so the engine decodes one batch of
everything that is generating — what vLLM's scheduler does, on our KV slots
(policy/kv_slots.py). Sampling and prefix reuse are the engine's own.

``ContinuousDecoder`` is the torch core (no threads, no Ray): ``admit`` then ``step``
until ``active`` is 0; each finished request is handed to its callback.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Sequence

import torch

from policy.gen_types import GenRequest, GenResult, prefill_buckets, token_budget
from policy.kv_slots import KVSlots
from policy.sampling import sample_next

if TYPE_CHECKING:  # the engine imports this module, not the other way round
    from policy.engine import HFEngine

Callback = Callable[[GenResult], None]


@dataclass
class _Row:
    prompt: List[int]
    budget: int
    stops: frozenset
    done: Callback
    constraint: object = None  # rollout.grammar.TurnConstraint, or None
    tokens: List[int] = field(default_factory=list)
    log_probs: List[float] = field(default_factory=list)


class ContinuousDecoder:
    def __init__(self, engine: HFEngine, max_rows: int):
        if engine.processor is not None:
            raise ValueError("continuous batching serves text policies; VL policies use whole-batch generate")
        cfg = engine.model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.engine = engine
        self.slots = KVSlots(cfg.num_hidden_layers, max_rows, cfg.num_key_value_heads, head_dim,
                             next(engine.model.parameters()).dtype, engine.device)
        self.rows: List[_Row] = []
        self.temperature = torch.zeros(max_rows)
        self.top_p = torch.ones(max_rows)
        self.steps = self.row_steps = 0

    @property
    def active(self) -> int:
        return len(self.rows)

    @property
    def free(self) -> int:
        return self.slots.free

    @torch.no_grad()
    def admit(self, reqs: Sequence[GenRequest], callbacks: Sequence[Callback]) -> None:
        """Prefill ``reqs`` (their cached prefixes reused), sample each one's first token and
        give it a slot; a request that ends at its first token completes here."""
        if len(reqs) > self.free:
            raise RuntimeError(f"{len(reqs)} requests for {self.free} free slots")
        for r in reqs:  # before any work: a bad request fails alone, not the running batch
            token_budget(r.sampling_params)
        eng = self.engine
        t0 = time.perf_counter()
        kv_before = eng.counters["kv_s"]
        hits = [eng.prefix.lookup(r.prompt_ids) for r in reqs]
        for bucket in prefill_buckets([len(r.prompt_ids) - c for r, (c, _) in zip(reqs, hits)]):
            prompts = [reqs[i].prompt_ids for i in bucket]
            ids, attn, past, _ = eng._batch_inputs(prompts, [hits[i] for i in bucket], 0)
            pos = ((attn.cumsum(-1) - 1).clamp(min=0))[:, attn.shape[1] - ids.shape[1]:]
            out = eng.model(input_ids=ids.to(eng.device), attention_mask=attn.to(eng.device),
                            position_ids=pos.to(eng.device), past_key_values=past, use_cache=True)
            params = [reqs[i].sampling_params for i in bucket]
            constraints = [eng.constraint(p) for p in params]
            logits = eng.masks.apply(out.logits[:, -1, :], [c.allowed() if c is not None else None for c in constraints])
            tok, lp = sample_next(logits, torch.tensor([float(p.get("temperature", 1.0)) for p in params]),
                                  torch.tensor([float(p.get("top_p", 1.0)) for p in params]), eng.generator)
            for j, i in enumerate(bucket):
                cols = torch.nonzero(attn[j]).flatten().to(eng.device)
                kv = [(layer.keys[j][:, cols], layer.values[j][:, cols]) for layer in past.layers]
                p = params[j]
                row = _Row(list(reqs[i].prompt_ids), token_budget(p),
                           frozenset(p.get("stop_token_ids") or ()) | {eng.eos_id}, callbacks[i], constraints[j])
                t_kv = time.perf_counter()
                slot = self.slots.add(kv)
                eng.counters["kv_s"] += time.perf_counter() - t_kv
                self.temperature[slot], self.top_p[slot] = float(p.get("temperature", 1.0)), float(p.get("top_p", 1.0))
                self.rows.append(row)
                self._append(slot, int(tok[j]), float(lp[j]))
        eng.counters["prefill_s"] += time.perf_counter() - t0 - (eng.counters["kv_s"] - kv_before)

    def _append(self, slot: int, token: int, log_prob: float) -> None:
        row = self.rows[slot]
        if row.constraint is not None and not row.constraint.done:
            row.constraint.advance(token)
        row.tokens.append(token)
        row.log_probs.append(log_prob)
        if token in row.stops or len(row.tokens) >= row.budget:
            self._finish(slot)

    def _finish(self, slot: int) -> None:
        row = self.rows[slot]
        fed = len(row.tokens) - 1  # the last sampled token was never run
        t0 = time.perf_counter()
        if self.engine.prefix.enabled:
            assert int(self.slots.lengths[slot]) == len(row.prompt) + fed
            self.engine.prefix.store(row.prompt + row.tokens[:fed], self.slots.sequence(slot))
        last = len(self.rows) - 1
        self.slots.remove(slot)
        self.rows[slot] = self.rows[last]
        self.temperature[slot], self.top_p[slot] = self.temperature[last], self.top_p[last]
        self.rows.pop()
        self.engine.counters["kv_s"] += time.perf_counter() - t0
        stop = "completed" if row.tokens[-1] in row.stops else "length"
        row.done(GenResult(row.tokens, row.log_probs, stop, row.constraint is not None))

    @torch.no_grad()
    def step(self) -> None:
        """One token for every live row; finished rows leave (and are delivered)."""
        n = len(self.rows)
        if not n:
            return
        eng = self.engine
        t0, kv_before = time.perf_counter(), eng.counters["kv_s"]
        cache, mask, pos = self.slots.begin_step()
        ids = torch.tensor([r.tokens[-1] for r in self.rows], device=eng.device)[:, None]
        out = eng.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        self.slots.end_step()
        logits = out.logits[:, -1, :]
        if any(r.constraint is not None for r in self.rows):
            logits = eng.masks.apply(logits, [r.constraint.allowed() if r.constraint is not None and not r.constraint.done
                                              else None for r in self.rows])
        tok, lp = sample_next(logits, self.temperature[:n], self.top_p[:n], eng.generator)
        toks, lps = tok.tolist(), lp.tolist()
        for slot in range(n - 1, -1, -1):  # from the end: a finished row takes the last slot's place
            self._append(slot, toks[slot], lps[slot])
        self.steps += 1
        self.row_steps += n
        c = eng.counters
        c["decode_s"] += time.perf_counter() - t0 - (c["kv_s"] - kv_before)  # leaving rows' KV saves are kv_s
        c["decode_steps"] += 1
        c["decode_row_steps"] += n

    def abort(self) -> List[_Row]:
        """Drops every live row (after a failed step); returns them so callers can fail them."""
        rows, self.rows = self.rows, []
        while self.slots.n:
            self.slots.remove(self.slots.n - 1)
        return rows
