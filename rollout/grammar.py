"""Constrained decoding of policy turns: a grammar over the turn format, applied token by
token, so a turn is well-formed by construction and its tool arguments are made of the
episode's own words.

A turn is ``<thinking>`` free text ``</thinking>`` then one tool call or answer in the exact
JSON our tools take (``TurnGrammar``):

- the tool name is one of the tools; ``prompt_gen`` and ``knowledge`` take ``{}``;
- ``quality_eval``/``mask_gen`` take ``{"image_index": k}`` and the answer names
  ``final_image_index`` k, with k a generated image of this episode;
- ``image_gen`` takes ``{"prompt": "..."}``: a *copy* of what the tools have said. By
  default (``copy="prefix"``) the prompt is a beginning of one PG prompt or KR passage of
  this episode, ending at a whole word where a text or a sentence ends (the defect's name
  ends the task line, so "a large dark crack (crack" is a prompt), after at most
  ``max_prompt_words`` words; before PG or KR has spoken, ``image_gen`` is not on offer.
  ``copy="bigram"`` (the earlier grammar) lets each word follow the previous one, with the
  same separator, anywhere in the task line and the tools' texts (a walk of their
  word-bigram graph). Measured on the agent ablation: under bigram copying, GRPO learned to
  splice texts where they share a word — "a normal syn_marble" (the task line), then "a
  normal syn_marble crack) across the marble" — and the procedural IG still drew a passing
  crack from the words; only half of the first IG prompts of two of three GRPO runs were
  PG's prompt. Prefix copying leaves the policy the choice of what to copy and where to
  stop, and nothing to garble. (The tiny policy, free, wrote "a medium st on the
  syn_weave) on the weave".)

``TurnConstraint`` walks the grammar as a set of character-level states and, at each step,
gives the token ids whose text can follow (a walk of the vocabulary's character trie,
cached per state). Sampling renormalizes over them, so the log-probs an engine returns are
those of the constrained distribution; ``replay`` recomputes the allowed sets of a stored
turn, which is how the learner takes its log-probs under the same distribution (RL stays
on-policy). Tokens forced by the grammar (one allowed id) have log-prob 0 and carry no
gradient, as they should.

Where we depart: the paper samples tool calls freely. The copy constraint is ours: it is
what a 3-layer policy needs to carry a prompt it reads; a pretrained LLM copies on its own,
and verl/vLLM's guided decoding by JSON schema covers the rest of the grammar there.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from rollout.format import ANSWER_CLOSE, ANSWER_OPEN, CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN, TOOL_NAMES

WORD = re.compile(r"[A-Za-z0-9_]+")
CONSTRAINED_FIELD = "grammar"  # the server's TokenOutput.extra_fields flag: sampled under the sent grammar
SENTENCE_END = ".:;!?"


def copy_graph(texts: Iterable[str]):
    """(starts, edges, ends) of the texts' word-bigram graph: the words that begin a text or
    a sentence; word -> {separator -> next words}; the words that end a text or a sentence.
    A separator is the exact text between two words (" ", ", ", " (", ") ", ...)."""
    starts, ends, edges = set(), set(), {}
    for text in texts:
        words = list(WORD.finditer(text or ""))
        for i, m in enumerate(words):
            w = m.group()
            if i == 0:
                starts.add(w)
            if i + 1 == len(words):
                ends.add(w)
                continue
            sep = text[m.end():words[i + 1].start()]
            if '"' in sep or "\\" in sep or "\n" in sep:
                continue
            if any(c in SENTENCE_END for c in sep):  # a sentence ends here; the next one starts
                ends.add(w)
                starts.add(words[i + 1].group())
                continue
            edges.setdefault(w, {}).setdefault(sep, set()).add(words[i + 1].group())
    return frozenset(starts), {w: {s: frozenset(v) for s, v in d.items()} for w, d in edges.items()}, frozenset(ends)


@dataclass(frozen=True)
class TurnGrammar:
    """What one policy turn may be. JSON-serializable: it travels in ``sampling_params``
    and is stored with the episode so the learner can replay it."""

    images: int  # images of the episode so far (0 is the normal): valid indices are 1..images-1
    texts: Tuple[str, ...]  # the task line and the tools' texts so far: where a prompt may end (and, bigram, copy from)
    tools: Tuple[str, ...] = TOOL_NAMES
    max_think_tokens: int = 48
    max_prompt_words: int = 20
    sources: Tuple[str, ...] = ()  # prefix copying: the texts a prompt is a beginning of (PG prompts, KR passages)
    copy: str = "prefix"  # prefix | bigram

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TurnGrammar":
        # a grammar stored before prefix copying existed was a bigram grammar
        return cls(int(d["images"]), tuple(d["texts"]), tuple(d.get("tools", TOOL_NAMES)),
                   int(d.get("max_think_tokens", 48)), int(d.get("max_prompt_words", 20)),
                   tuple(d.get("sources", ())), str(d.get("copy", "bigram")))

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _word_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def copyable(text: str) -> str:
    """What of a source a JSON string may copy: up to its first quote, backslash or newline."""
    return re.split(r'["\\\n]', text or "", maxsplit=1)[0]


# ---------- the JSON part: a small NFA over characters ----------
# An element is ("lit", text) | ("int", values) | ("prompt", None); a state is
# (alternative, element, sub-state); alternative -1 marks acceptance.

class _Trie:
    __slots__ = ("children", "word")

    def __init__(self):
        self.children: Dict[str, "_Trie"] = {}
        self.word = False


class _JsonNFA:
    """The JSON part as a set of character-level states. A prompt sub-state is
    ("w", previous word, separator, prefix) while writing a word, or ("s", word, prefix,
    words) while writing the separator after one; see ``copy_graph``."""

    def __init__(self, alternatives: Sequence[Sequence[tuple]], texts: Sequence[str], max_words: int,
                 sources: Optional[Sequence[str]] = None):
        """``sources`` given: prefix copying (a prompt is a beginning of one source);
        otherwise bigram copying over ``texts``."""
        self.alts = [list(a) for a in alternatives]
        self.starts, self.edges, self.ends = copy_graph(texts)
        self.max_words = max_words
        self.seps = {w: tuple(d) for w, d in self.edges.items()}
        self.sources = None if sources is None else tuple(copyable(s) for s in sources if copyable(s))

    def _initial(self, kind: str):
        if kind == "lit" or kind == "int":
            return 0 if kind == "lit" else ""
        return ("p", "", 0) if self.sources is not None else ("w", None, None, "", 0)

    def _candidates(self, prev, sep) -> FrozenSet[str]:
        return self.starts if prev is None else self.edges.get(prev, {}).get(sep, frozenset())

    def _complete(self, elem: tuple, sub) -> bool:
        kind, arg = elem
        if kind == "lit":
            return sub == len(arg)
        if kind == "int":
            return sub in arg
        if sub[0] == "p":
            return self._prefix_complete(sub[1])
        if sub[0] != "w":
            return False
        _, prev, sep, prefix, _ = sub
        return prefix in self.ends and prefix in self._candidates(prev, sep)

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

    def _prefix_complete(self, prefix: str) -> bool:
        """A whole-word beginning of a source that ends where a text or a sentence ends."""
        if not prefix or not _word_char(prefix[-1]):
            return False
        last = WORD.findall(prefix[-64:])[-1]
        for s in self.sources:
            if s.startswith(prefix) and (len(s) == len(prefix) or not _word_char(s[len(prefix)])):
                if len(s) == len(prefix) or last in self.ends:
                    return True
        return False

    def _prompt_step(self, sub, ch: str) -> List[tuple]:
        tag = sub[0]
        out = []
        if tag == "p":
            _, prefix, words = sub
            grown = prefix + ch
            words += _word_char(ch) and (not prefix or not _word_char(prefix[-1]))
            if words <= self.max_words and any(s.startswith(grown) for s in self.sources):
                out.append(("p", grown, words))
            return out
        if tag == "w":
            _, prev, sep, prefix, words = sub
            cands = self._candidates(prev, sep)
            grown = prefix + ch
            if any(w.startswith(grown) for w in cands):
                out.append(("w", prev, sep, grown, words))
            if prefix in cands and words + 1 < self.max_words:  # the word is whole: its separator begins
                if any(s.startswith(ch) for s in self.seps.get(prefix, ())):
                    out.append(("s", prefix, ch, words + 1))
        else:
            _, word, sep, words = sub
            grown = sep + ch
            if any(s.startswith(grown) for s in self.seps.get(word, ())):
                out.append(("s", word, grown, words))
            if sep in self.edges.get(word, {}) and any(w.startswith(ch) for w in self.edges[word][sep]):
                out.append(("w", word, sep, ch, words))
        return out

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
                nxt.extend((alt, e, x) for x in self._prompt_step(sub, ch))
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
            if g.copy == "prefix" and not any(copyable(s) for s in g.sources):
                continue  # nothing to copy a prompt from yet: ask PG (or KR) first
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
            if not hit:  # a dead end (no token spells a way on): the rest of the turn is free
                self.phase = "done"
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
            self.nfa = _JsonNFA(alts, self.g.texts, self.g.max_prompt_words,
                                self.g.sources if self.g.copy == "prefix" else None)
            self.states = self.nfa.start()
        elif self.phase in ("call", "answer"):
            if token in (v.ids[CALL_CLOSE], v.ids[ANSWER_CLOSE]):
                self.phase = "done"
            elif token not in v.text:  # a special token (only reachable once the turn is free)
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
        if c.done:  # finished, or a dead end just found: free from here, as the engine sampled
            allowed = None
        if allowed is not None and t not in allowed:
            raise ValueError(f"token {t} was not allowed by the turn grammar at position {len(out)}")
        out.append(allowed)
        if not c.done:
            c.advance(t)
    return out
