"""A scripted policy: exact turn texts injected as the 'generated' tokens."""
from __future__ import annotations

import json
from typing import List

from actors.config import ToolsConfig
from actors.registry import build_tool
from actors.service import ToolService
from rollout.episode import Generation
from rollout.format import TOOL_NAMES


class ScriptedLLM:
    def __init__(self, tokenizer, turns: List[str], truncate_last: bool = False):
        self.tok, self.turns, self.truncate_last = tokenizer, list(turns), truncate_last
        self.requests = []
        self.images = []  # image_data of each request (VL episodes)

    async def generate(self, request_id, prompt_ids, sampling_params, image_data=None):
        self.requests.append((request_id, list(prompt_ids), dict(sampling_params)))
        self.images.append(image_data)
        text = self.turns.pop(0) if self.turns else "<thinking>out of script</thinking>"
        ids = self.tok.encode(text, add_special_tokens=False)[: sampling_params["max_tokens"]]
        stop = "length" if (self.truncate_last and not self.turns) else "completed"
        return Generation(ids, [-0.25] * len(ids), stop)


def local_tools(embedder: str = "hashing"):
    cfg = ToolsConfig()
    cfg.knowledge.embedder = embedder
    return {n: ToolService(build_tool(n, cfg), timeout_s=30) for n in TOOL_NAMES}


def call(name: str, thinking: str = "next step", **arguments) -> str:
    return f"<thinking>{thinking}</thinking><tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def answer(index: int, thinking: str = "done") -> str:
    return f'<thinking>{thinking}</thinking><answer>{{"status": "success", "final_image_index": {index}}}</answer>'


WELL_FORMED = [
    call("prompt_gen", "get a first prompt"),
    call("image_gen", "edit the normal image", prompt="a medium dark crack across the pill, sharp high contrast",
         region=[0.3, 0.35, 0.7, 0.65]),
    call("quality_eval", "judge it"),
    call("knowledge", "quality is low, look up the defect"),
    call("image_gen", "refine", prompt="a thin dark crack splitting the pill, sharp high contrast", region=[0.3, 0.35, 0.7, 0.65]),
    call("quality_eval", "judge again", image_index=2),
    call("mask_gen", "mask the final image", image_index=2),
    answer(2),
]
