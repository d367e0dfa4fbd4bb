"""What the policy reads: the system prompt, the task, and each tool result rendered as a
``tool`` turn. Kept short: with a tiny vocabulary every word of the prompt costs tokens."""
from __future__ import annotations

import json
from typing import Any, Dict

from rollout.format import IM_END, IM_START, RESPONSE_CLOSE, RESPONSE_OPEN

SYSTEM_PROMPT = (
    "Add a realistic defect to image 0 with tools. Each turn: <thinking>why</thinking> then one "
    "<tool_call>{\"name\": tool, \"arguments\": {...}}</tool_call>; at the end "
    "<answer>{\"status\": \"success\", \"final_image_index\": k}</answer>. Tools: prompt_gen {}; "
    "knowledge {\"query\"?}; image_gen {\"prompt\", \"region\"?, \"image_index\"?} makes image k; "
    "quality_eval {\"image_index\"} scores it 0-5; mask_gen {\"image_index\"}."
)


def task_text(category: str, defect_type: str) -> str:
    return f"Category: {category}. Defect type: {defect_type}. Image 0 is a normal {category}."


def observation_text(payload: Dict[str, Any], image: str = "") -> str:
    """A tool result (or an error) as the next ``tool`` turn, ending with the assistant cue.

    The policy's turn ended at its closing tag (a stop token), so the observation closes
    that assistant message first. ``image``: a VL policy's placeholder for the new image.
    """
    body = json.dumps(payload, separators=(", ", ": "), ensure_ascii=False)
    return f"{IM_END}\n{IM_START}tool\n{RESPONSE_OPEN}{body}{image}{RESPONSE_CLOSE}{IM_END}\n{IM_START}assistant\n"
