"""Sampling for a vision-language policy in the HF engine (CPU and small GPUs).

The prompt ids already hold each image's expanded ``<|image_pad|>`` run (rollout/vision.py);
here the images become pixel inputs and HF's ``generate`` runs the Qwen2.5-VL model (its
multimodal rotary positions are computed inside). Log-probs are those of the sampled
tokens under softmax(logits / T), as in the text path; a turn grammar masks the logits
before both the draw and the log-prob. No prefix reuse here: the vision
encoder's outputs depend on the images the request carries. On GPU clusters verl's
vLLM/SGLang servers take the same requests.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from rollout.vision import to_pil


class _GrammarProcessor:
    """HF logits processor: each constrained row samples from its grammar's allowed ids
    (rollout/grammar.py); the allowed sets of every step are kept for the log-probs."""

    def __init__(self, constraints, masks, width: int):
        self.constraints, self.masks, self.width = constraints, masks, width
        self.steps: List[list] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.width:  # the token sampled at the previous step
            for c, t in zip(self.constraints, input_ids[:, -1].tolist()):
                if c is not None and not c.done:
                    c.advance(t)
        allowed = [c.allowed() if c is not None and not c.done else None for c in self.constraints]
        self.steps.append(allowed)
        return self.masks.apply(scores, allowed)


@torch.no_grad()
def sample_vl(model, image_processor, prompts: Sequence[List[int]], images: Sequence[list], temperature: float,
              top_p: float, max_new: Sequence[int], stop_ids: Sequence[int], pad_id: int, seed: int,
              constraints: Optional[Sequence] = None, masks=None):
    """(token_ids, log_probs, stopped) per row; ``images[i]`` are row i's images in order;
    ``constraints[i]``: row i's turn grammar walk (None: free)."""
    device = next(model.parameters()).device
    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = 1
    pixels = {}
    flat = [to_pil(im) if not hasattr(im, "convert") else im.convert("RGB") for row in images for im in (row or [])]
    if flat:
        out = image_processor(images=flat, return_tensors="pt")
        pixels = {"pixel_values": out["pixel_values"].to(device, model.dtype), "image_grid_thw": out["image_grid_thw"].to(device)}
    torch.manual_seed(seed)
    sampled = temperature > 0
    grammar = None
    if constraints is not None and any(c is not None for c in constraints):
        from transformers import LogitsProcessorList

        grammar = _GrammarProcessor(list(constraints), masks, width)
        pixels["logits_processor"] = LogitsProcessorList([grammar])
    gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **pixels,
                         max_new_tokens=int(max(max_new)), do_sample=sampled,
                         temperature=temperature if sampled else None, top_p=top_p if sampled else None,
                         top_k=0 if sampled else None, eos_token_id=list(stop_ids), pad_token_id=pad_id,
                         output_logits=True, return_dict_in_generate=True)
    new = gen.sequences[:, width:]
    raw = [l if grammar is None else masks.apply(l, grammar.steps[t]) for t, l in enumerate(gen.logits)]
    logp = torch.stack([torch.log_softmax(l.float() / max(temperature, 1e-5), -1) for l in raw], 1)
    tok_lp = logp.gather(-1, new[:, : logp.shape[1], None]).squeeze(-1)
    stops, rows = set(stop_ids), []
    for i in range(n):
        toks, lps = [], []
        for t in range(min(int(max_new[i]), new.shape[1])):
            toks.append(int(new[i, t]))
            lps.append(float(tok_lp[i, t]))
            if toks[-1] in stops:
                break
        rows.append((toks, lps, bool(toks) and toks[-1] in stops))
    return rows
