"""The HF generation engine: batches concurrent episodes' requests, returns token ids and
the log-probs of the sampled tokens under the sampling distribution (temperature applied),
and loads new weights on request.

``HFEngine`` is the torch core (no Ray); ``EngineActor`` hosts it and serves verl's
LLM-server interface, ``generate(request_id, *, prompt_ids, sampling_params,
image_data=None) -> TokenOutput``. On GPU clusters verl's vLLM/SGLang servers stand
behind the same interface.

Text policies run our KV-cached sampling loop with per-episode prefix reuse: here one
whole batch at a time (``generate_batch``; the actor's ``DynamicBatcher`` with
``continuous=False``), or continuously in the actor (policy/continuous.py: requests join
and leave between decode steps). VL policies (a processor next to the weights) go through
HF ``generate`` with pixel inputs.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from actors.batching import DynamicBatcher
from policy.gen_types import GenRequest, GenResult, prefill_buckets, token_budget
from policy.kv_buffer import preallocated_cache
from policy.prefix_cache import PrefixCache
from policy.sampling import AllowedMasks, sample_next


def _group_key(p: Dict[str, Any]) -> Tuple:  # the grammar is per row, not a group setting
    return (float(p.get("temperature", 1.0)), float(p.get("top_p", 1.0)), tuple(p.get("stop_token_ids") or ()))


class HFEngine:
    """``prefix_cache_tokens > 0`` keeps earlier turns' keys and values (policy/prefix_cache.py),
    so a turn prefills only its new tokens; 0 re-runs the whole context every turn, as a
    plain ``generate`` call does."""

    def __init__(self, model_path: str, dtype: str = "float32", device: Optional[str] = None, seed: int = 0,
                 prefix_cache_tokens: int = 0):
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        from rollout.vision import processor_for

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.processor = processor_for(model_path)  # None: a text policy
        loader = AutoModelForImageTextToText if self.processor is not None else AutoModelForCausalLM
        self.model = loader.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device).eval()
        if self.processor is None:
            from policy.attention import register

            self.model.set_attn_implementation(register())  # no per-step copy of the cache per query head
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.eos_id = self.model.generation_config.eos_token_id if self.processor is not None else self.model.config.eos_token_id
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.weights_version = 0
        self.prefix = PrefixCache(prefix_cache_tokens)
        self.masks = AllowedMasks()
        # where batch time goes: KV copy-in/out, the first (prefill) forward, the decode steps
        self.counters = {"kv_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0, "decode_row_steps": 0}

    def _batch_inputs(self, prompts: Sequence[List[int]], hits, budget: int):
        """Per row: the cached prefix (left-padded to the longest) then the rest of the prompt
        (left-padded to the longest rest). The attention mask has holes where the padding is;
        positions count only real tokens, so each row sees exactly its own sequence. The KV
        cache is allocated for the whole run (prompt + ``budget`` new tokens)."""
        cached = [c for c, _ in hits]
        n, width_c = len(prompts), max(cached)
        width_s = max(len(p) - c for p, c in zip(prompts, cached))
        ids = torch.full((n, width_s), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, width_c + width_s), dtype=torch.long)
        for i, (p, c) in enumerate(zip(prompts, cached)):
            rest = p[c:]
            ids[i, width_s - len(rest):] = torch.tensor(rest)
            attn[i, width_c - c: width_c] = 1
            attn[i, width_c + width_s - len(rest):] = 1
        layers = []
        if width_c:
            for layer, (k0, v0) in enumerate(next(kv for _, kv in hits if kv is not None)):
                k = k0.new_zeros((n, k0.shape[0], width_c, k0.shape[2]))
                v = v0.new_zeros((n, v0.shape[0], width_c, v0.shape[2]))
                for i, (c, kv) in enumerate(hits):
                    if c:
                        k[i, :, width_c - c:], v[i, :, width_c - c:] = kv[layer]
                layers.append((k, v))
        past = preallocated_cache(self.model.config.num_hidden_layers, width_c + width_s + budget, layers)
        return ids, attn, past, width_c + width_s

    def _store_prefixes(self, prompts, out_tokens, context_w: int, attn: torch.Tensor, past) -> None:
        """Keep each row's keys/values: its prompt and every reply token that was fed back."""
        for i, p in enumerate(prompts):
            fed = max(len(out_tokens[i]) - 1, 0)  # the last sampled token was never run
            real = torch.nonzero(attn[i, :context_w]).flatten()
            cols = torch.cat([real, torch.arange(context_w, context_w + fed, device=real.device)])
            kv = [(layer.keys[i][:, cols].clone(), layer.values[i][:, cols].clone()) for layer in past.layers]
            self.prefix.store(list(p) + out_tokens[i][:fed], kv)

    def _sample(self, prompts: Sequence[List[int]], temperature: float, top_p: float, max_new: Sequence[int],
                stop_ids: Sequence[int], constraints: Optional[Sequence] = None) -> List[GenResult]:
        """Look up every row's cached prefix, then sample in buckets of similar new-token
        counts: one row that must prefill its whole context (a first turn, an evicted entry)
        would otherwise pad every other row's few new tokens to its length."""
        hits = [self.prefix.lookup(p) for p in prompts]
        constraints = list(constraints) if constraints is not None else [None] * len(prompts)
        results: List[Optional[GenResult]] = [None] * len(prompts)
        for rows in prefill_buckets([len(p) - c for p, (c, _) in zip(prompts, hits)]):
            outs = self._sample_rows([prompts[i] for i in rows], [hits[i] for i in rows], temperature, top_p,
                                     [max_new[i] for i in rows], stop_ids, [constraints[i] for i in rows])
            for i, o in zip(rows, outs):
                results[i] = o
        return results

    @torch.no_grad()
    def _sample_rows(self, prompts: Sequence[List[int]], hits, temperature: float, top_p: float,
                     max_new: Sequence[int], stop_ids: Sequence[int], constraints: Sequence) -> List[GenResult]:
        """KV-cached sampling loop over a padded batch; stops per row at a stop id or its own
        budget; a row with a constraint samples from its allowed ids only."""
        n = len(prompts)
        t0 = time.perf_counter()
        ids, attn, past, context_w = self._batch_inputs(prompts, hits, max(max_new))
        ids, attn = ids.to(self.device), attn.to(self.device)
        step_pos = ((attn.cumsum(-1) - 1).clamp(min=0))[:, attn.shape[1] - ids.shape[1]:]
        stops = torch.tensor(sorted(set(stop_ids) | {self.eos_id}), device=self.device)
        limits = torch.tensor(list(max_new), device=self.device)
        toks, lps, alive = [], [], []  # per step: [n] tensors, read back once at the end
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        step_ids = ids
        t1 = time.perf_counter()
        for step in range(int(limits.max())):
            out = self.model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, past_key_values=past,
                             use_cache=True)
            if step == 0:
                t2 = time.perf_counter()
            past = out.past_key_values
            logits = out.logits[:, -1, :]
            if any(c is not None for c in constraints):
                logits = self.masks.apply(logits, [c.allowed() if c is not None and not c.done else None
                                                   for c in constraints])
            tok, tok_lp = sample_next(logits, temperature, top_p, self.generator)
            for c, t in zip(constraints, tok.tolist() if any(c is not None for c in constraints) else ()):
                if c is not None and not c.done:
                    c.advance(t)
            toks.append(tok)
            lps.append(tok_lp)
            alive.append(~done)
            done = done | torch.isin(tok, stops) | (step + 1 >= limits)
            if bool(done.all()):
                break
            step_ids = tok[:, None]
            attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=self.device)], dim=1)
            step_pos = step_pos[:, -1:] + 1
        t3 = time.perf_counter()
        alive_t = torch.stack(alive, 1).cpu()
        tok_t, lp_t = torch.stack(toks, 1).cpu()[alive_t], torch.stack(lps, 1).cpu()[alive_t]
        lengths = alive_t.sum(1).tolist()
        out_tokens = [t.tolist() for t in tok_t.split(lengths)]
        out_lp = [t.tolist() for t in lp_t.split(lengths)]
        if self.prefix.enabled:
            self._store_prefixes(prompts, out_tokens, context_w, attn, past)
        t4 = time.perf_counter()
        c = self.counters
        c["kv_s"] += (t1 - t0) + (t4 - t3)
        c["prefill_s"] += t2 - t1
        c["decode_s"] += t3 - t2
        c["decode_steps"] += len(toks) - 1
        c["decode_row_steps"] += (len(toks) - 1) * n
        stop_set = set(stops.tolist())
        return [GenResult(t, lp, "completed" if t and t[-1] in stop_set else "length", c is not None)
                for t, lp, c in zip(out_tokens, out_lp, constraints)]

    def generate_batch(self, reqs: Sequence[GenRequest]) -> List[GenResult]:
        """One result per request; requests with equal sampling settings share a forward pass."""
        results: List[Optional[GenResult]] = [None] * len(reqs)
        groups: Dict[Tuple, List[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault(_group_key(r.sampling_params), []).append(i)
        for (temperature, top_p, stop_ids), idx in groups.items():
            prompts = [reqs[i].prompt_ids for i in idx]
            budgets = [token_budget(reqs[i].sampling_params) for i in idx]
            constraints = [self.constraint(reqs[i].sampling_params) for i in idx]
            if self.processor is not None:
                outs = self._sample_vl(prompts, [reqs[i].image_data for i in idx], temperature, top_p, budgets, stop_ids,
                                       constraints)
            else:
                outs = self._sample(prompts, temperature, top_p, budgets, stop_ids, constraints)
            for i, o in zip(idx, outs):
                results[i] = o
        return results

    def constraint(self, params: Dict[str, Any]):
        """The request's turn grammar walk (rollout/grammar.py), or None for free sampling."""
        from rollout.grammar import constraint_for

        return constraint_for(params, self.tokenizer)

    def _sample_vl(self, prompts, images, temperature, top_p, budgets, stop_ids, constraints) -> List[GenResult]:
        from policy.vl_sampling import sample_vl

        stops = sorted(set(stop_ids) | {self.eos_id})
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        rows = sample_vl(self.model, self.processor.image_processor, prompts, images, temperature, top_p, budgets,
                         stops, self.pad_id, seed, constraints, self.masks)
        return [GenResult(t, lp, "completed" if stopped else "length", c is not None)
                for (t, lp, stopped), c in zip(rows, constraints)]

    def load_state_dict(self, state_dict: Dict[str, torch.Tensor], version: Optional[int] = None) -> int:
        self.model.load_state_dict(state_dict)
        self.prefix.clear()  # keys and values of the old weights
        self.weights_version = self.weights_version + 1 if version is None else version
        return self.weights_version

    def load_path(self, path: str) -> int:
        from transformers import AutoModelForCausalLM

        fresh = AutoModelForCausalLM.from_pretrained(path)
        return self.load_state_dict(fresh.state_dict())


class EngineActor:
    """Ray actor around ``HFEngine`` speaking verl's LLM-server ``generate`` interface."""

    def __init__(self, model_path: str, max_batch_size: int = 32, batch_wait_ms: float = 10.0, seed: int = 0,
                 prefix_cache_tokens: int = 0, continuous: bool = True):
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.engine = HFEngine(model_path, seed=seed, prefix_cache_tokens=prefix_cache_tokens)
        if continuous and self.engine.processor is None:  # text policies: requests join between decode steps
            from policy.continuous import ContinuousDecoder
            from policy.continuous_batcher import ContinuousBatcher

            self.batcher = ContinuousBatcher(ContinuousDecoder(self.engine, max_batch_size), batch_wait_ms)
        else:  # whole batches: every row of a batch decodes until the batch's last one finishes
            self.batcher = DynamicBatcher(self.engine.generate_batch, max_batch_size, batch_wait_ms)

    async def generate(self, request_id: str = "", *, prompt_ids: List[int], sampling_params: Dict[str, Any],
                       image_data: Optional[list] = None, **kwargs):
        if image_data and self.engine.processor is None:
            raise ValueError("images sent to a text policy: set policy.path to a vision-language checkpoint")
        token_budget(sampling_params)  # a bad request fails alone, before it joins a batch
        self.engine.constraint(sampling_params)  # so does a bad grammar
        res: GenResult = await self.batcher.submit(GenRequest(list(prompt_ids), dict(sampling_params), image_data))
        from policy.server_output import token_output

        return token_output(res.token_ids, res.log_probs, res.stop_reason, self.engine.weights_version, res.constrained)

    async def load_state_dict(self, state_dict, version: Optional[int] = None) -> int:
        return await self.batcher.run_exclusive(self.engine.load_state_dict, state_dict, version)

    async def load_path(self, path: str) -> int:
        return await self.batcher.run_exclusive(self.engine.load_path, path)

    async def stats(self) -> dict:
        b = self.batcher
        return {"batches": b.batches, "items": b.items, "busy_s": b.busy_s,
                "mean_batch": b.items / b.batches if b.batches else 0.0, "weights_version": self.engine.weights_version,
                **self.engine.prefix.stats(), **self.engine.counters}

    def check_health(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()
