"""One multi-turn episode (design.md §4), independent of Ray and verl.

``Episode`` holds the state: token ids exactly as generated (never re-tokenized), the
response mask (1 = policy token, 0 = observation token), the sampling-time log-probs, the
images, every tool call with its result, and every QE score. ``EpisodeRunner`` drives it
as an explicit state machine with one handler per state:

    GENERATE ──policy turn──▶ ACT ──tool result / error observation──▶ GENERATE
        │                      │
        └── turn or token cap ─┴── valid <answer> ──▶ DONE

Malformed turns and failing tools become typed error observations; the runner never
raises on policy output.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol

import numpy as np

from rollout.config import EpisodeConfig
from rollout.format import ANSWER_CLOSE, CALL_CLOSE, IM_END
from rollout.grammar import TurnGrammar
from rollout.parser import Answer, ToolCall, TurnError, parse_turn
from rollout.prompts import SYSTEM_PROMPT, observation_text, task_text
from rollout.tasks import Task
from rollout.vision import VisionRenderer


@dataclass
class Generation:
    """What an LLM server returns for one turn."""

    token_ids: List[int]
    log_probs: List[float]
    stop_reason: str = "completed"  # completed | length
    constrained: bool = False  # the server sampled it under the turn grammar it was sent


class LLM(Protocol):
    """``image_data`` (VL policies only): the images of the token stream, in order."""

    async def generate(self, request_id: str, prompt_ids: List[int], sampling_params: Dict[str, Any],
                       image_data: Optional[list] = None) -> Generation: ...


class ToolCaller(Protocol):
    async def call(self, arguments, images=None, context=None) -> dict: ...


class State(enum.Enum):
    GENERATE = "generate"
    ACT = "act"
    DONE = "done"


@dataclass
class Episode:
    episode_id: str
    task: Task
    prompt_ids: List[int]
    images: List[np.ndarray]
    response_ids: List[int] = field(default_factory=list)
    response_mask: List[int] = field(default_factory=list)
    response_logprobs: List[float] = field(default_factory=list)
    image_meta: List[Dict[str, Any]] = field(default_factory=lambda: [{"source": "normal"}])
    masks: Dict[int, np.ndarray] = field(default_factory=dict)
    shown_images: List[int] = field(default_factory=list)  # VL: images in the token stream, in order
    # per policy turn: the grammar it was sampled under (rollout/grammar.py), None where sampled freely
    turn_grammars: List[Optional[Dict[str, Any]]] = field(default_factory=list)
    tool_log: List[Dict[str, Any]] = field(default_factory=list)
    qe_scores: List[Dict[str, Any]] = field(default_factory=list)
    actions: List[str] = field(default_factory=list)  # tool names, "answer", or "error:<code>"
    format_ok: List[bool] = field(default_factory=list)
    turns: int = 0
    status: Optional[str] = None  # answer | turn_cap | token_cap
    answer: Optional[Dict[str, Any]] = None
    timings: Dict[str, float] = field(default_factory=lambda: {"generate_s": 0.0, "tools_s": 0.0})

    def record(self) -> Dict[str, Any]:
        """Everything the store and the reward need (images as arrays)."""
        return {
            "episode_id": self.episode_id, "task": self.task.to_dict(), "prompt_ids": list(self.prompt_ids),
            "response_ids": list(self.response_ids), "response_mask": list(self.response_mask),
            "response_logprobs": list(self.response_logprobs), "tool_log": self.tool_log,
            "qe_scores": self.qe_scores, "actions": self.actions, "format_ok": self.format_ok,
            "turns": self.turns, "status": self.status, "answer": self.answer, "images": self.images,
            "image_meta": self.image_meta, "masks": self.masks, "timings": self.timings,
            "shown_images": list(self.shown_images), "turn_grammars": list(self.turn_grammars),
        }


def _summary(result: Mapping[str, Any]) -> Dict[str, Any]:
    """The JSON part of a tool result (arrays dropped) for the log."""
    return {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}


class EpisodeRunner:
    """``processor`` (a VL policy's): the normal image goes into the task message and every
    generated image into its observation (rollout/vision.py); without it the episode is text."""

    def __init__(self, task: Task, normal: np.ndarray, tokenizer, llm: LLM, tools: Mapping[str, ToolCaller],
                 cfg: EpisodeConfig, episode_id: Optional[str] = None, processor=None):
        self.vision = VisionRenderer(processor) if processor is not None else None
        user = task_text(task.category, task.defect_type) + (self.vision.placeholder(normal) if self.vision else "")
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        self.ep = Episode(episode_id or task.task_id, task, list(prompt_ids), [normal],
                          shown_images=[0] if self.vision else [])
        self.tok, self.llm, self.tools, self.cfg = tokenizer, llm, tools, cfg
        self.im_end = tokenizer.convert_tokens_to_ids(IM_END)
        self.stop_ids = [self.im_end] + [tokenizer.convert_tokens_to_ids(t) for t in (CALL_CLOSE, ANSWER_CLOSE)]
        self._last_turn: Optional[Generation] = None
        self._texts: List[str] = [task_text(task.category, task.defect_type)]  # where a prompt may end
        self._sources: List[str] = []  # what a prompt may be a beginning of: PG's prompts, KR's passages
        self._handlers = {State.GENERATE: self._generate, State.ACT: self._act}

    async def run(self) -> Episode:
        state = State.GENERATE
        while state is not State.DONE:
            state = await self._handlers[state]()
        return self.ep

    # ---- states ----
    def _room(self) -> int:
        return self.cfg.max_response_tokens - len(self.ep.response_ids)

    def _cap_reached(self) -> bool:
        """Set the status and say so when no further turn may start."""
        if self.ep.turns >= self.cfg.max_turns:
            self.ep.status = "turn_cap"
        elif min(self.cfg.max_turn_tokens, self._room()) < 8:
            self.ep.status = "token_cap"
        return self.ep.status is not None

    def _accept(self, gen: Generation) -> None:
        """Append one policy turn exactly as generated (mask 1, sampling-time log-probs)."""
        ep = self.ep
        ids = list(gen.token_ids)[: min(self.cfg.max_turn_tokens, self._room())]
        ep.response_ids += ids
        ep.response_mask += [1] * len(ids)
        ep.response_logprobs += (list(gen.log_probs or []) + [0.0] * len(ids))[: len(ids)]
        ep.turns += 1
        self._last_turn = Generation(ids, list(gen.log_probs or []), gen.stop_reason)

    async def _generate(self) -> State:
        if self._cap_reached():
            return State.DONE
        ep = self.ep
        params = {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p,
                  "max_tokens": min(self.cfg.max_turn_tokens, self._room()), "stop_token_ids": self.stop_ids}
        if self.cfg.grammar:
            grammar = TurnGrammar(len(ep.images), tuple(dict.fromkeys(self._texts)),
                                  max_think_tokens=self.cfg.grammar_think_tokens,
                                  sources=tuple(dict.fromkeys(self._sources)), copy=self.cfg.grammar_copy)
            params["grammar"] = grammar.to_dict()
        t0 = time.perf_counter()
        vision = {"image_data": VisionRenderer.image_data(ep.images, ep.shown_images)} if self.vision else {}
        gen = await self.llm.generate(f"{ep.episode_id}-t{ep.turns}", ep.prompt_ids + ep.response_ids, params, **vision)
        ep.timings["generate_s"] += time.perf_counter() - t0
        self._accept(gen)
        ep.turn_grammars.append(params.get("grammar") if gen.constrained else None)
        return State.ACT

    async def step(self, gen: Generation) -> bool:
        """Feed one externally produced turn (the gymnasium view); True when the episode is over."""
        if self.ep.status is None and not self._cap_reached():
            self._accept(gen)
            self.ep.turn_grammars.append(None)
            if await self._act() is State.GENERATE:
                self._cap_reached()
        return self.ep.status is not None

    async def _act(self) -> State:
        ep, turn = self.ep, self._last_turn
        text = self.tok.decode(turn.token_ids, skip_special_tokens=False)
        parsed = parse_turn(text.replace(IM_END, ""), truncated=turn.stop_reason == "length")
        ep.format_ok.append(parsed.format_ok and not isinstance(parsed.action, TurnError))
        action = parsed.action
        if isinstance(action, Answer):
            problem = self._check_answer(action.content)
            if problem is None:
                ep.actions.append("answer")
                ep.answer = action.content
                ep.status = "answer"
                return State.DONE
            action = problem
        if isinstance(action, TurnError):
            ep.actions.append(f"error:{action.code}")
            ep.tool_log.append({"turn": ep.turns, "name": None, "ok": False, "error": {"code": action.code, "message": action.message}})
            payload = {"error": action.code, "message": action.message}
        else:
            payload = await self._call_tool(action)
        image = ""
        if self.vision and ep.actions[-1] == "image_gen":  # a VL policy sees the new image
            image = self.vision.placeholder(ep.images[-1])
            ep.shown_images.append(len(ep.images) - 1)
        self._texts.extend(str(payload[k]) for k in ("prompt", "text", "review") if k in payload)
        if ep.actions[-1] in ("prompt_gen", "knowledge"):
            self._sources.extend(str(payload[k]) for k in ("prompt", "text") if k in payload)
        obs = observation_text(payload, image)
        if turn.token_ids and turn.token_ids[-1] == self.im_end:
            obs = obs[len(IM_END):]
        obs_ids = self.tok.encode(obs, add_special_tokens=False)
        if len(obs_ids) > self._room():
            ep.status = "token_cap"
            return State.DONE
        ep.response_ids += obs_ids
        ep.response_mask += [0] * len(obs_ids)
        ep.response_logprobs += [0.0] * len(obs_ids)
        return State.GENERATE

    # ---- helpers ----
    def _check_answer(self, content: Dict[str, Any]) -> Optional[TurnError]:
        idx = content.get("final_image_index")
        n = len(self.ep.images)
        if not isinstance(idx, int) or isinstance(idx, bool) or not 1 <= idx < n:
            have = f"images 1..{n - 1}" if n > 1 else "no generated image yet"
            return TurnError("bad_answer", f"final_image_index must name a generated image ({have})")
        if content.get("status") not in ("success", "failure"):
            return TurnError("bad_answer", 'status must be "success" or "failure"')
        return None

    def _image_for(self, args: Dict[str, Any], default_last: bool) -> int:
        n = len(self.ep.images)
        idx = args.get("image_index", n - 1 if default_last else 0)
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n or (default_last and idx == 0):
            have = f"1..{n - 1}" if n > 1 else "none yet"
            raise LookupError(f"image_index must name a generated image ({have})")
        return idx

    async def _call_tool(self, call: ToolCall) -> Dict[str, Any]:
        ep, task = self.ep, self.ep.task
        ctx: Dict[str, Any] = {"category": task.category, "defect_type": task.defect_type}
        args = dict(call.arguments)
        images = None
        try:
            if call.name == "image_gen":
                idx = self._image_for(args, default_last=False)
                images = {"image": ep.images[idx]}
                args.setdefault("seed", (task.seed * 31 + ep.turns) % (2**31 - 1))
                if task.region is not None:  # the caller fixed where the defect goes
                    args["region"] = list(task.region)
            elif call.name in ("quality_eval", "mask_gen"):
                idx = self._image_for(args, default_last=True)
                images = {"normal": ep.images[0], "edited": ep.images[idx]}
                ctx["region_px"] = ep.image_meta[idx].get("region_px")
        except LookupError as e:
            out = {"ok": False, "error": {"code": "bad_image_index", "message": str(e), "field": "image_index"}}
        else:
            t0 = time.perf_counter()
            out = await self.tools[call.name].call(args, images, ctx)
            ep.timings["tools_s"] += time.perf_counter() - t0
        entry = {"turn": ep.turns, "name": call.name, "arguments": call.arguments, "ok": out["ok"]}
        if not out["ok"]:
            err = out["error"]
            entry["error"] = err
            ep.tool_log.append(entry)
            ep.actions.append(f"error:{err['code']}")
            payload = {"error": err["code"], "message": err["message"]}
            if err.get("field"):
                payload["field"] = err["field"]
            return payload
        ep.actions.append(call.name)
        result = out["result"]
        entry["result"] = _summary(result)
        ep.tool_log.append(entry)
        if call.name == "image_gen":
            ep.images.append(result["image"])
            ep.image_meta.append({"source": "image_gen", "prompt": args["prompt"], "from_index": idx,
                                  "region": result["region"], "region_px": result["region_px"]})
            return {"image_index": len(ep.images) - 1, "region": result["region"]}
        if call.name == "quality_eval":
            score = {"image_index": idx, "turn": ep.turns, "location_score": result["location_score"],
                     "quality_score": result["quality_score"], "pass": bool(result["pass"])}
            ep.qe_scores.append(score)
            ep.image_meta[idx]["qe"] = score
            return {"image_index": idx, "location_score": result["location_score"],
                    "quality_score": result["quality_score"], "pass": bool(result["pass"]), "review": result["review"]}
        if call.name == "mask_gen":
            ep.masks[idx] = result["mask"]
            return {"image_index": idx, "mask_area": result["area"]}
        if call.name == "prompt_gen":
            return {"prompt": result["prompt"]}
        return {"text": result["text"]}  # knowledge
