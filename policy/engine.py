"""The HF generation engine: batches concurrent episodes' requests, returns token ids and
the log-probs of the sampled tokens under the sampling distribution (temperature applied),
and loads new weights on request.

``HFEngine`` is the torch core (no Ray); ``EngineActor`` hosts it and serves verl's
LLM-server interface, ``generate(request_id, *, prompt_ids, sampling_params,
image_data=None) -> TokenOutput``, batching callers through ``DynamicBatcher``. On GPU
clusters verl's vLLM/SGLang servers stand behind the same interface.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from actors.batching import DynamicBatcher


@dataclass
class GenRequest:
    prompt_ids: List[int]
    sampling_params: Dict[str, Any]


@dataclass
class GenResult:
    token_ids: List[int]
    log_probs: List[float]
    stop_reason: str  # completed | length


def _group_key(p: Dict[str, Any]) -> Tuple:
    return (float(p.get("temperature", 1.0)), float(p.get("top_p", 1.0)), tuple(p.get("stop_token_ids") or ()))


class HFEngine:
    def __init__(self, model_path: str, dtype: str = "float32", device: Optional[str] = None, seed: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.eos_id = self.model.config.eos_token_id
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.weights_version = 0

    @torch.no_grad()
    def _sample(self, prompts: Sequence[List[int]], temperature: float, top_p: float, max_new: Sequence[int],
                stop_ids: Sequence[int]) -> List[GenResult]:
        """Left-padded batch, KV-cached sampling loop; stops per row at a stop id or its own budget."""
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        position = (attn.cumsum(-1) - 1).clamp(min=0)
        stops = torch.tensor(sorted(set(stop_ids) | {self.eos_id}), device=self.device)
        limits = torch.tensor(list(max_new), device=self.device)
        out_tokens: List[List[int]] = [[] for _ in range(n)]
        out_lp: List[List[float]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        past, step_ids, step_pos = None, ids, position
        for step in range(int(limits.max())):
            out = self.model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, past_key_values=past,
                             use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            logp = torch.log_softmax(logits / max(temperature, 1e-5), dim=-1)
            if temperature <= 0:
                tok = logp.argmax(-1)
            else:
                probs = logp.exp()
                if top_p < 1.0:
                    sorted_p, order = probs.sort(-1, descending=True)
                    keep = sorted_p.cumsum(-1) - sorted_p < top_p
                    probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
                # inverse-CDF sampling: one uniform per row instead of torch.multinomial's
                # per-call set-up (or Gumbel noise per vocabulary entry) — same distribution
                cdf = probs.cumsum(-1)
                u = torch.rand((probs.shape[0], 1), generator=self.generator, device=self.device) * cdf[:, -1:]
                tok = torch.searchsorted(cdf, u).squeeze(-1).clamp(max=probs.shape[-1] - 1)
            tok_lp = logp.gather(-1, tok[:, None]).squeeze(-1)
            for i in torch.nonzero(~done).flatten().tolist():
                out_tokens[i].append(int(tok[i]))
                out_lp[i].append(float(tok_lp[i]))
            done |= torch.isin(tok, stops) | (step + 1 >= limits)
            if bool(done.all()):
                break
            step_ids = tok[:, None]
            attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=self.device)], dim=1)
            step_pos = step_pos[:, -1:] + 1
        stop_set = set(stops.tolist())
        return [GenResult(t, lp, "completed" if t and t[-1] in stop_set else "length") for t, lp in zip(out_tokens, out_lp)]

    def generate_batch(self, reqs: Sequence[GenRequest]) -> List[GenResult]:
        """One result per request; requests with equal sampling settings share a forward pass."""
        results: List[Optional[GenResult]] = [None] * len(reqs)
        groups: Dict[Tuple, List[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault(_group_key(r.sampling_params), []).append(i)
        for (temperature, top_p, stop_ids), idx in groups.items():
            outs = self._sample([reqs[i].prompt_ids for i in idx], temperature, top_p,
                                [int(reqs[i].sampling_params.get("max_tokens", 128)) for i in idx], stop_ids)
            for i, o in zip(idx, outs):
                results[i] = o
        return results

    def load_state_dict(self, state_dict: Dict[str, torch.Tensor], version: Optional[int] = None) -> int:
        self.model.load_state_dict(state_dict)
        self.weights_version = self.weights_version + 1 if version is None else version
        return self.weights_version

    def load_path(self, path: str) -> int:
        from transformers import AutoModelForCausalLM

        fresh = AutoModelForCausalLM.from_pretrained(path)
        return self.load_state_dict(fresh.state_dict())


class EngineActor:
    """Ray actor around ``HFEngine`` speaking verl's LLM-server ``generate`` interface."""

    def __init__(self, model_path: str, max_batch_size: int = 32, batch_wait_ms: float = 10.0, seed: int = 0):
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.engine = HFEngine(model_path, seed=seed)
        self.batcher = DynamicBatcher(self.engine.generate_batch, max_batch_size, batch_wait_ms)

    async def generate(self, request_id: str = "", *, prompt_ids: List[int], sampling_params: Dict[str, Any],
                       image_data: Optional[list] = None, **kwargs):
        if image_data:
            raise ValueError("the HF engine serves text policies; use verl's vLLM/SGLang server for a VL policy")
        res: GenResult = await self.batcher.submit(GenRequest(list(prompt_ids), dict(sampling_params)))
        from rollout.verl_adapter import token_output

        return token_output(res.token_ids, res.log_probs, res.stop_reason, self.engine.weights_version)

    async def load_state_dict(self, state_dict, version: Optional[int] = None) -> int:
        return await self.batcher.run_exclusive(self.engine.load_state_dict, state_dict, version)

    async def load_path(self, path: str) -> int:
        return await self.batcher.run_exclusive(self.engine.load_path, path)

    async def stats(self) -> dict:
        b = self.batcher
        return {"batches": b.batches, "items": b.items, "busy_s": b.busy_s,
                "mean_batch": b.items / b.batches if b.batches else 0.0, "weights_version": self.engine.weights_version}

    def check_health(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()
