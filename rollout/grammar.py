"""Constrained decoding of policy turns: a grammar over the turn format, applied token by
token, so a turn is well-formed by construction and its tool arguments are made of the
episode's own words.

A turn is ``<thinking>`` free text ``</thinking>`` then one tool call or answer in the exact
JSON our tools take (``TurnGrammar``):

- the tool name is one of the tools; ``prompt_gen`` and ``knowledge`` take ``{}``;
- ``quality_eval``/``mask_gen`` take ``{"image_index": k}`` and the answer names
  ``final_image_index`` k, with k a generated image of this episode;
- ``image_gen`` takes ``{"prompt": "..."}`` of at most ``max_prompt_words`` words (words
  separated by at most two of `` ,.()-``), all from the *lexicon*: the
  task's and the tools' words seen so far in the episode (the PG prompt, the KR passage,
  the QE reviews) and a few function words. The policy can copy and edit the prompt and
  the review; it cannot write words that nobody said (the garbling of a tiny policy:
  "a medium st on the syn_weave) on the weave").

``TurnConstraint`` walks the grammar as a set of character-level states and, at each step,
gives the token ids whose text can follow (a walk of the vocabulary's character trie,
cached per state). Sampling renormalizes over them, so the log-probs an engine returns are
those of the constrained distribution; ``replay`` recomputes the allowed sets of a stored
turn, which is how the learner takes its log-probs under the same distribution (RL stays
on-policy). Tokens forced by the grammar (one allowed id) have log-prob 0 and carry no
gradient, as they should.

Where we depart: the paper samples tool calls freely; verl/vLLM offer the same idea as
guided decoding by JSON schema (on GPU, ``TurnGrammar.regex()`` is the equivalent).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from rollout.format import ANSWER_CLOSE, ANSWER_OPEN, CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN, TOOL_NAMES

FUNCTION_WORDS = ("a", "an", "the", "on", "in", "of", "with", "and", "to", "at", "near", "across", "along", "its")
PROMPT_PUNCTUATION = " ,.()-"
_WORD = re.compile(r"[A-Za-z0-9_]+")


def lexicon_from(texts: Iterable[str], extra: Iterable[str] = FUNCTION_WORDS) -> Tuple[str, ...]:
    """The words a prompt may use: every word of ``texts`` (and of their ``a_b`` parts)."""
    words = set(extra)
    for text in texts:
        for w in _WORD.findall(text or ""):
            words.add(w)
            words.update(p for p in w.split("_") if p)
    return tuple(sorted(words))


@dataclass(frozen=True)
class TurnGrammar:
    """What one policy turn may be. JSON-serializable: it travels in ``sampling_params``
    and is stored with the episode so the learner can replay it."""

    images: int  # images of the episode so far (0 is the normal): valid indices are 1..images-1
    lexicon: Tuple[str, ...]
    tools: Tuple[str, ...] = TOOL_NAMES
    max_think_tokens: int = 48
    max_prompt_words: int = 20

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TurnGrammar":
        return cls(int(d["images"]), tuple(d["lexicon"]), tuple(d.get("tools", TOOL_NAMES)),
                   int(d.get("max_think_tokens", 48)), int(d.get("max_prompt_words", 20)))

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def regex(self) -> str:
        """The JSON part as a regular expression (for vLLM-style guided decoding)."""
        idx = "|".join(str(k) for k in range(1, self.images)) or "(?!)"
        word = "|".join(re.escape(w) for w in sorted(self.lexicon, key=len, reverse=True))
        prompt = rf'(?:{word})(?:[{re.escape(PROMPT_PUNCTUATION)}]+(?:{word}))*[{re.escape(PROMPT_PUNCTUATION)}]*'
        calls = []
        for t in self.tools:
            calls.append(re.escape(f'{{"name": "{t}", "arguments": ') + _args_regex(t, idx, prompt) + re.escape("}"))
        return "|".join(calls)


def _args_regex(tool: str, idx: str, prompt: str) -> str:
    if tool == "image_gen":
        return re.escape('{"prompt": "') + prompt + re.escape('"}')
    if tool in ("quality_eval", "mask_gen"):
        return re.escape('{"image_index": ') + f"(?:{idx})" + re.escape("}")
    return re.escape("{}")


# ---------- the JSON part: a small NFA over characters ----------
# An element is ("lit", text) | ("int", values) | ("prompt", None); a state is
# (alternative, element, sub-state); alternative -1 marks acceptance.

class _Trie:
    __slots__ = ("children", "word")

    def __init__(self):
        self.children: Dict[str, "_Trie"] = {}
        self.word = False


def _word_trie(words: Iterable[str]) -> _Trie:
    root = _Trie()
    for w in words:
        node = root
        for ch in w:
            node = node.children.setdefault(ch, _Trie())
        node.word = True
    return root


class _JsonNFA:
    def __init__(self, alternatives: Sequence[Sequence[tuple]], lexicon: Sequence[str], max_words: int):
        self.alts = [list(a) for a in alternatives]
        self.max_words = max_words
        self.words = _word_trie(w for w in lexicon if w and '"' not in w and "\\" not in w)
        self._nodes: List[_Trie] = []  # prompt sub-states refer to trie nodes by index
        self._ids: Dict[int, int] = {}

    def _node_id(self, node: _Trie) -> int:
        i = self._ids.get(id(node))
        if i is None:
            i = self._ids[id(node)] = len(self._nodes)
            self._nodes.append(node)
        return i

    def _initial(self, kind: str):
        if kind == "lit" or kind == "int":
            return 0 if kind == "lit" else ""
        return (-1, 0, 0)  # prompt: (trie node, or -1 between words; words begun; separators in a row)

    def _complete(self, elem: tuple, sub) -> bool:
        kind, arg = elem
        if kind == "lit":
            return sub == len(arg)
        if kind == "int":
            return sub in arg
        node, words, _ = sub
        return words >= 1 and (node == -1 or self._nodes[node].word)

    def closure(self, states: Iterable[tuple]) -> FrozenSet[tuple]:
        out, todo = set(), list(states)
        while todo:
            s = todo.pop()
            if s in out:
                continue
            out.add(s)
            alt, e, sub = s
            if alt < 0:
                continue
            elems = self.alts[alt]
            if self._complete(elems[e], sub):
                if e + 1 == len(elems):
                    todo.append((-1, 0, 0))
                else:
                    todo.append((alt, e + 1, self._initial(elems[e + 1][0])))
        return frozenset(out)

    def start(self) -> FrozenSet[tuple]:
        return self.closure((a, 0, self._initial(elems[0][0])) for a, elems in enumerate(self.alts))

    def step(self, states: FrozenSet[tuple], ch: str) -> FrozenSet[tuple]:
        nxt = []
        for alt, e, sub in states:
            if alt < 0:
                continue
            kind, arg = self.alts[alt][e]
            if kind == "lit":
                if sub < len(arg) and arg[sub] == ch:
                    nxt.append((alt, e, sub + 1))
            elif kind == "int":
                cand = sub + ch
                if ch.isdigit() and any(v.startswith(cand) for v in arg):
                    nxt.append((alt, e, cand))
            else:
                node, words, seps = sub
                if ch in PROMPT_PUNCTUATION:  # a separator: after a whole word, at most two in a row
                    if words and words < self.max_words and seps < 2 and (node == -1 or self._nodes[node].word):
                        nxt.append((alt, e, (-1, words, seps + 1)))
                    continue
                if node == -1 and words >= self.max_words:
                    continue
                here = self.words if node == -1 else self._nodes[node]
                child = here.children.get(ch)
                if child is not None:
                    nxt.append((alt, e, (self._node_id(child), words + (node == -1), 0)))
        return self.closure(nxt) if nxt else frozenset()

    @staticmethod
    def accepts(states: FrozenSet[tuple]) -> bool:
        return (-1, 0, 0) in states


def _call_alternatives(g: TurnGrammar) -> List[List[tuple]]:
    idx = frozenset(str(k) for k in range(1, g.images))
    alts = []
    for t in g.tools:
        head = [("lit", f'{{"name": "{t}", "arguments": ')]
        if t == "image_gen":
            args = [("lit", '{"prompt": "'), ("prompt", None), ("lit", '"}')]
        elif t in ("quality_eval", "mask_gen"):
            if not idx:
                continue
            args = [("lit", '{"image_index": '), ("int", idx), ("lit", "}")]
        else:
            args = [("lit", "{}")]
        alts.append(head + args + [("lit", "}")])
    return alts


def _answer_alternatives(g: TurnGrammar) -> List[List[tuple]]:
    idx = frozenset(str(k) for k in range(1, g.images))
    return [[("lit", '{"status": "'), ("lit", status), ("lit", '", "final_image_index": '), ("int", idx), ("lit", "}")]
            for status in ("success", "failure")] if idx else []


# ---------- tokens ----------

class Vocabulary:
    """The tokenizer seen as text: each ordinary token's string, a character trie over them,
    and the ids of the turn's special tokens."""

    def __init__(self, tokenizer):
        self.size = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        self.ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (THINK_OPEN, THINK_CLOSE, CALL_OPEN, CALL_CLOSE,
                                                                    ANSWER_OPEN, ANSWER_CLOSE)}
        self.trie = _Trie()
        self.token_ids: Dict[int, List[int]] = {}  # id(trie node) -> tokens ending there
        self.think_ids: List[int] = []
        for tid in range(self.size):
            if tid in special:
                continue
            text = tokenizer.decode([tid])
            if not text or "\ufffd" in text:
                continue
            self.think_ids.append(tid)
            node = self.trie
            for ch in text:
                node = node.children.setdefault(ch, _Trie())
            self.token_ids.setdefault(id(node), []).append(tid)
        self.text = {tid: tokenizer.decode([tid]) for tid in self.think_ids}


@lru_cache(maxsize=8)
def _vocabulary(tokenizer) -> Vocabulary:
    return Vocabulary(tokenizer)


def vocabulary(tokenizer) -> Vocabulary:
    return _vocabulary(tokenizer)


class TurnConstraint:
    """One turn's walk through the grammar. ``allowed()`` is the tuple of token ids that may
    come next (``None``: any token); ``advance(token)`` moves on. The thinking may use any
    ordinary token, up to ``max_think_tokens``; the tags come in order; the JSON follows the
    tool's arguments."""

    def __init__(self, grammar: TurnGrammar, vocab: Vocabulary):
        self.g, self.v = grammar, vocab
        self.phase = "start"  # start | think | tag | call | answer | close | done
        self.think = 0
        self.nfa: Optional[_JsonNFA] = None
        self.states: FrozenSet[tuple] = frozenset()
        self._cache: Dict[Tuple, Tuple[int, ...]] = {}

    def allowed(self) -> Tuple[int, ...]:
        v = self.v
        if self.phase == "start":
            return (v.ids[THINK_OPEN],)
        if self.phase == "think":
            return (v.ids[THINK_CLOSE],) if self.think >= self.g.max_think_tokens else self._think_ids()
        if self.phase == "tag":
            return (v.ids[CALL_OPEN],) + ((v.ids[ANSWER_OPEN],) if self.g.images > 1 else ())
        if self.phase in ("call", "answer"):
            key = (self.phase, self.states)
            hit = self._cache.get(key)
            if hit is None:
                hit = self._cache[key] = self._json_ids()
            return hit
        return ()

    def _think_ids(self) -> Tuple[int, ...]:
        key = ("think",)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = tuple(sorted(self.v.think_ids + [self.v.ids[THINK_CLOSE]]))
        return hit

    def _json_ids(self) -> Tuple[int, ...]:
        out: List[int] = []
        stack = [(self.v.trie, self.states)]
        while stack:
            node, states = stack.pop()
            for ch, child in node.children.items():
                nxt = self.nfa.step(states, ch)
                if nxt:
                    out.extend(self.v.token_ids.get(id(child), ()))
                    stack.append((child, nxt))
        if _JsonNFA.accepts(self.states):
            out.append(self.v.ids[CALL_CLOSE if self.phase == "call" else ANSWER_CLOSE])
        return tuple(sorted(out))

    def advance(self, token: int) -> None:
        v = self.v
        if self.phase == "start":
            self.phase = "think"
        elif self.phase == "think":
            if token == v.ids[THINK_CLOSE]:
                self.phase = "tag"
            else:
                self.think += 1
        elif self.phase == "tag":
            answer = token == v.ids[ANSWER_OPEN]
            self.phase = "answer" if answer else "call"
            alts = _answer_alternatives(self.g) if answer else _call_alternatives(self.g)
            self.nfa = _JsonNFA(alts, self.g.lexicon, self.g.max_prompt_words)
            self.states = self.nfa.start()
        elif self.phase in ("call", "answer"):
            if token in (v.ids[CALL_CLOSE], v.ids[ANSWER_CLOSE]):
                self.phase = "done"
            else:
                for ch in v.text[token]:
                    self.states = self.nfa.step(self.states, ch)
        else:
            self.phase = "done"

    @property
    def done(self) -> bool:
        return self.phase == "done"


def constraint_for(params: Dict, tokenizer) -> Optional[TurnConstraint]:
    """The constraint a request asks for in ``sampling_params["grammar"]`` (None: free)."""
    spec = params.get("grammar")
    if not spec:
        return None
    return TurnConstraint(TurnGrammar.from_dict(spec), vocabulary(tokenizer))


def replay(grammar: TurnGrammar, tokens: Sequence[int], tokenizer) -> List[Optional[Tuple[int, ...]]]:
    """The allowed ids at each position of a turn generated under ``grammar`` (what the
    sampler renormalized over). Raises ``ValueError`` if a token was not allowed."""
    c = TurnConstraint(grammar, vocabulary(tokenizer))
    out: List[Optional[Tuple[int, ...]]] = []
    for t in tokens:
        allowed = c.allowed() if not c.done else None
        if allowed is not None and t not in allowed:
            raise ValueError(f"token {t} was not allowed by the turn grammar at position {len(out)}")
        out.append(allowed)
        if not c.done:
            c.advance(t)
    return out
