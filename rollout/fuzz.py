"""Generated policy outputs for robustness checks: fragments of the episode format (tags,
tool-call JSON with random names and arguments, truncation, noise) glued at random.

``check_turn`` is the property: parsing never raises, and every outcome is an action or a
typed error — a tool call's arguments then go through the tool's schema check, which
either accepts them or answers a typed ``ToolError``. Used by the reliability tests
(driven by hypothesis) and by ``anomalyagent bench faults`` (driven by a seeded RNG).
"""
from __future__ import annotations

import json
import random
from typing import Any, Dict

from actors.errors import ERROR_CODES, ToolError
from rollout.format import TOOL_NAMES
from rollout.parser import TURN_ERROR_CODES, Answer, ToolCall, TurnError, parse_turn

TAGS = ["<thinking>", "</thinking>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "<|im_end|>",
        "<tool_response>", "</tool_response>", "<bogus>", "</", "<", ">", "{", "}", "[", "]", '"', ":"]
NAMES = list(TOOL_NAMES) + ["", "image-gen", "shell", "IMAGE_GEN", "mask_gen ", None, 3]
ARG_KEYS = ["prompt", "image_index", "region", "seed", "query", "category", "defect_type", "knowledge", "x", ""]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 7, 2**31, -(2**40), 10**30])
    if kind == "float":
        return rng.choice([0.0, 0.5, 1.5, -0.1, 1e308, float("nan")])
    if kind == "str":
        return rng.choice(["", "a crack", "x" * rng.randint(0, 700), "\u00e9\u6f22", "\x00", "a dark scratch across"])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(ARG_KEYS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def random_call_json(rng: random.Random) -> str:
    call: Dict[str, Any] = {"name": rng.choice(NAMES), "arguments": random_value(rng)}
    if rng.random() < 0.6:
        call["arguments"] = {rng.choice(ARG_KEYS): random_value(rng) for _ in range(rng.randint(0, 4))}
    if rng.random() < 0.1:
        call.pop(rng.choice(["name", "arguments"]))
    text = json.dumps(call, allow_nan=True)
    if rng.random() < 0.15:
        text = text[: rng.randint(0, len(text))]
    return text


def well_formed_turn(rng: random.Random) -> str:
    """The format followed, contents random: a call with random arguments, or an answer."""
    if rng.random() < 0.8:
        args = {rng.choice(ARG_KEYS): random_value(rng) for _ in range(rng.randint(0, 3))}
        body = json.dumps({"name": rng.choice(TOOL_NAMES), "arguments": args}, allow_nan=True)
        return f"<thinking>next</thinking><tool_call>{body}</tool_call>"
    body = json.dumps({"status": rng.choice(["success", "failure"]), "final_image_index": rng.randint(-1, 4)})
    return f"<thinking>done</thinking><answer>{body}</answer>"


def random_turn(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return well_formed_turn(rng)
    parts = []
    for _ in range(rng.randint(0, 8)):
        r = rng.random()
        if r < 0.35:
            parts.append(rng.choice(TAGS))
        elif r < 0.6:
            parts.append(random_call_json(rng))
        elif r < 0.7:
            parts.append(json.dumps({"status": rng.choice(["success", "failure", "ok", 1]),
                                     "final_image_index": random_value(rng)}))
        else:
            parts.append("".join(rng.choice("ab <>/{}\"\n\t:x\u00e9") for _ in range(rng.randint(0, 20))))
    text = "".join(parts)
    if rng.random() < 0.2:  # a turn cut at a random token
        text = text[: rng.randint(0, len(text))]
    return text


def check_turn(text: str, truncated: bool, tool_schemas: Dict[str, dict]) -> str:
    """The outcome's kind ("tool_call", "answer", "error:<code>"); raises only if a property breaks."""
    from actors.schema import validate_arguments

    parsed = parse_turn(text, truncated=truncated)
    action = parsed.action
    if isinstance(action, TurnError):
        assert action.code in TURN_ERROR_CODES, action.code
        return f"error:{action.code}"
    if isinstance(action, Answer):
        assert isinstance(action.content, dict)
        return "answer"
    assert isinstance(action, ToolCall) and action.name in TOOL_NAMES, action
    try:
        validate_arguments(action.name, tool_schemas[action.name], action.arguments)
    except ToolError as e:
        assert e.code in ERROR_CODES, e.code
        return f"error:{e.code}"
    return "tool_call"


def tool_schemas() -> Dict[str, dict]:
    from actors.image_gen import ProceduralImageGen
    from actors.knowledge import KnowledgeRetriever
    from actors.mask_gen import ClassicalMaskGen
    from actors.prompt_gen import TemplatePromptGen
    from actors.quality_eval import MetricJudge

    return {t.name: t.schema for t in (ProceduralImageGen, KnowledgeRetriever, ClassicalMaskGen, TemplatePromptGen,
                                       MetricJudge)}


def fuzz(n: int, seed: int = 0) -> Dict[str, int]:
    """Run ``n`` generated turns; counts of each outcome, and ``crashes`` (must be 0)."""
    rng = random.Random(seed)
    schemas = tool_schemas()
    counts: Dict[str, int] = {"crashes": 0}
    for _ in range(n):
        text = random_turn(rng)
        try:
            kind = check_turn(text, rng.random() < 0.2, schemas)
        except Exception:  # noqa: BLE001 - counted: the figure the bench reports
            kind = "crashes"
        counts[kind] = counts.get(kind, 0) + 1
    return counts
