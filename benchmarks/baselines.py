"""The fixed pipelines the agent is compared with, as generation engines.

Each pipeline answers the episode's turns like a policy would — it reads the task and the
tool results from the prompt it is sent — so it runs through the very same rollout
manager, tools, delivery gate and benchmarks as the agent, on the same normals:

- ``fixed``: IG with the plain prompt ``a {defect} on the {category}`` (the paper's
  "image model with a fixed prompt" row), then MG;
- ``pg``: PG → IG with PG's prompt → MG (the tool chain, one shot);
- ``best_of_k``: PG, then (IG → QE) ``k`` times with PG's prompt, MG on the best-scored
  image.

The engine speaks verl's server interface (``generate``); its turns carry log-prob 0.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from rollout.format import RESPONSE_CLOSE, RESPONSE_OPEN

PIPELINES = ("fixed", "pg", "best_of_k")
_TASK = re.compile(r"Category: (\S+)\. Defect type: (\S+)\.")


def _call(name: str, thinking: str, **arguments) -> str:
    return f"<thinking>{thinking}</thinking><tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def _answer(index: int) -> str:
    return f'<thinking>Deliver image {index}.</thinking><answer>{{"status": "success", "final_image_index": {index}}}</answer>'


def observations(text: str) -> List[Dict[str, Any]]:
    """The tool results an episode's context holds, in order."""
    out = []
    for body in re.findall(re.escape(RESPONSE_OPEN) + r"(.*?)" + re.escape(RESPONSE_CLOSE), text, flags=re.S):
        try:
            out.append(json.loads(body))
        except json.JSONDecodeError:
            out.append({})
    return out


def next_turn(pipeline: str, category: str, defect: str, obs: List[Dict[str, Any]], k: int = 1) -> str:
    """The pipeline's next turn, given the tool results so far."""
    if pipeline == "fixed":
        steps = [lambda: _call("image_gen", "Fixed prompt.", prompt=f"a {defect.replace('_', ' ')} on the {category}"),
                 lambda: _call("mask_gen", "Mask it.", image_index=1), lambda: _answer(1)]
        return steps[min(len(obs), len(steps) - 1)]()
    if not obs:
        return _call("prompt_gen", "Ask PG.")
    prompt = obs[0].get("prompt", f"a {defect} on the {category}")
    if pipeline == "pg":
        steps = [None, lambda: _call("image_gen", "PG's prompt.", prompt=prompt),
                 lambda: _call("mask_gen", "Mask it.", image_index=1), lambda: _answer(1)]
        return steps[min(len(obs), len(steps) - 1)]()
    if pipeline != "best_of_k":
        raise ValueError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")
    scores = [o for o in obs if "quality_score" in o]
    made = sum(1 for o in obs if "region" in o and "mask_area" not in o)
    if made < k and len(scores) == made:
        return _call("image_gen", f"Attempt {made + 1} of {k}.", prompt=prompt)
    if len(scores) < made:
        return _call("quality_eval", "Score it.", image_index=made)
    best = max(scores, key=lambda s: (bool(s.get("pass")), s["location_score"] + s["quality_score"]))["image_index"]
    if not any("mask_area" in o for o in obs):
        return _call("mask_gen", "Mask the best.", image_index=best)
    return _answer(best)


class PipelineEngine:
    """A generation engine actor that runs one fixed pipeline."""

    def __init__(self, policy_path: str, pipeline: str, k: int = 1):
        from transformers import AutoTokenizer

        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")
        self.tok = AutoTokenizer.from_pretrained(policy_path)
        self.pipeline, self.k = pipeline, max(1, int(k))

    async def generate(self, request_id: str = "", *, prompt_ids, sampling_params, image_data: Optional[list] = None,
                       **kwargs):
        from policy.server_output import token_output

        text = self.tok.decode(prompt_ids, skip_special_tokens=False)
        m = _TASK.search(text)
        if m is None:
            raise ValueError("the prompt holds no task line ('Category: ... Defect type: ...')")
        turn = next_turn(self.pipeline, m.group(1), m.group(2), observations(text), self.k)
        ids = self.tok.encode(turn, add_special_tokens=False)[: int(sampling_params.get("max_tokens", 4096))]
        return token_output(ids, [0.0] * len(ids), "completed")

    async def load_state_dict(self, state_dict, version=None) -> int:  # a pipeline has no weights
        return 0

    async def stats(self) -> dict:
        return {}

    def check_health(self) -> bool:
        return True
