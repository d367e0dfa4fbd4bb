"""Parse one policy turn: ``<thinking>…</thinking>`` then exactly one
``<tool_call>{json}</tool_call>`` or ``<answer>{json}</answer>``.

Anything malformed becomes a ``TurnError`` with a code the policy can learn from; the
parser never raises. A missing ``<thinking>`` block is tolerated but recorded
(``format_ok=False``), since the behaviour reward counts format validity separately.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from rollout.format import ANSWER_CLOSE, ANSWER_OPEN, CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN, TOOL_NAMES

TURN_ERROR_CODES = ("truncated", "unclosed_tag", "unknown_tag", "bad_json", "no_action", "multiple_actions",
                    "unknown_tool", "bad_call", "bad_answer")
_KNOWN_TAGS = {THINK_OPEN, THINK_CLOSE, CALL_OPEN, CALL_CLOSE, ANSWER_OPEN, ANSWER_CLOSE}
_TAG = re.compile(r"</?[A-Za-z_][A-Za-z0-9_]*>")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Dict[str, Any]


@dataclass(frozen=True)
class Answer:
    content: Dict[str, Any]


@dataclass(frozen=True)
class TurnError:
    code: str
    message: str

    def __post_init__(self):
        assert self.code in TURN_ERROR_CODES, self.code


@dataclass(frozen=True)
class ParsedTurn:
    thinking: Optional[str]
    action: Union[ToolCall, Answer, TurnError]
    format_ok: bool


def _block(text: str, open_tag: str, close_tag: str) -> Tuple[Optional[str], Optional[TurnError]]:
    start = text.find(open_tag)
    if start < 0:
        return None, None
    end = text.find(close_tag, start + len(open_tag))
    if end < 0:
        return None, TurnError("unclosed_tag", f"{open_tag} is never closed with {close_tag}")
    return text[start + len(open_tag):end].strip(), None


def _json_object(body: str, what: str) -> Union[Dict[str, Any], TurnError]:
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
        return TurnError("bad_json", f"{what} is not valid JSON: {msg}")
    if not isinstance(obj, dict):
        return TurnError("bad_json", f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_turn(text: str, truncated: bool = False, tool_names=TOOL_NAMES) -> ParsedTurn:
    thinking, err = _block(text, THINK_OPEN, THINK_CLOSE)
    format_ok = thinking is not None
    if err is not None:
        return ParsedTurn(None, TurnError("truncated", "the turn ended inside <thinking>") if truncated else err, False)
    outside_json = re.sub(re.escape(CALL_OPEN) + r".*?" + re.escape(CALL_CLOSE), " ", text, flags=re.S)
    outside_json = re.sub(re.escape(ANSWER_OPEN) + r".*?" + re.escape(ANSWER_CLOSE), " ", outside_json, flags=re.S)
    unknown = [t for t in _TAG.findall(outside_json) if t not in _KNOWN_TAGS]
    if unknown:
        return ParsedTurn(thinking, TurnError("unknown_tag", f"unknown tag {unknown[0]}; use <thinking>, <tool_call> or <answer>"), False)
    n_calls, n_answers = text.count(CALL_OPEN), text.count(ANSWER_OPEN)
    if n_calls + n_answers == 0:
        code = "truncated" if truncated else "no_action"
        return ParsedTurn(thinking, TurnError(code, "the turn has no <tool_call> and no <answer>"), format_ok)
    if n_calls + n_answers > 1:
        return ParsedTurn(thinking, TurnError("multiple_actions", "one <tool_call> or one <answer> per turn"), False)
    if n_calls:
        body, err = _block(text, CALL_OPEN, CALL_CLOSE)
        if err:
            return ParsedTurn(thinking, TurnError("truncated", "the turn ended inside <tool_call>") if truncated else err, False)
        obj = _json_object(body, "the tool call")
        if isinstance(obj, TurnError):
            return ParsedTurn(thinking, obj, format_ok)
        name, args = obj.get("name"), obj.get("arguments", {})
        if not isinstance(name, str):
            return ParsedTurn(thinking, TurnError("bad_call", 'a tool call needs "name" (string) and "arguments" (object)'), format_ok)
        if name not in tool_names:
            return ParsedTurn(thinking, TurnError("unknown_tool", f"unknown tool {name[:40]!r}; tools: {', '.join(tool_names)}"), format_ok)
        if not isinstance(args, dict):
            return ParsedTurn(thinking, TurnError("bad_call", '"arguments" must be a JSON object'), format_ok)
        extra = set(obj) - {"name", "arguments"}
        if extra:
            return ParsedTurn(thinking, TurnError("bad_call", f"unexpected key {sorted(extra)[0]!r} in the tool call"), format_ok)
        return ParsedTurn(thinking, ToolCall(name, args), format_ok)
    body, err = _block(text, ANSWER_OPEN, ANSWER_CLOSE)
    if err:
        return ParsedTurn(thinking, TurnError("truncated", "the turn ended inside <answer>") if truncated else err, False)
    obj = _json_object(body, "the answer")
    if isinstance(obj, TurnError):
        return ParsedTurn(thinking, obj, format_ok)
    return ParsedTurn(thinking, Answer(obj), format_ok)
