"""Constrained decoding: the turn grammar, the engine sampling under it, and the learner's
log-probs under the same constrained distribution."""
import re

import numpy as np
import pytest
import torch

from policy.engine import HFEngine
from policy.gen_types import GenRequest
from rollout.grammar import TurnGrammar, copy_graph, replay
from rollout.parser import Answer, ToolCall, parse_turn

PG = "a large dark crack (crack) across the marble, sharp high contrast"
REVIEW = "Make the defect more visible: sharp high contrast."
TEXTS = ("Category: syn_marble. Defect type: crack.", PG, REVIEW)


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_copy_graph_of_the_texts():
    starts, edges, ends = copy_graph(TEXTS)
    assert {"a", "Category", "Defect", "Make", "sharp"} <= starts  # texts and sentences begin there
    assert {"contrast", "crack", "syn_marble", "visible"} <= ends
    assert edges["a"] == {" ": {"large"}} and edges["crack"] == {" (": {"crack"}, ") ": {"across"}}
    assert edges["high"] == {" ": {"contrast"}}


def test_replay_accepts_the_canonical_turns(tok):
    g = TurnGrammar(images=3, texts=TEXTS, copy="bigram")
    turns = ['<thinking>I need a prompt.</thinking><tool_call>{"name": "prompt_gen", "arguments": {}}</tool_call>',
             f'<thinking>Edit.</thinking><tool_call>{{"name": "image_gen", "arguments": {{"prompt": "{PG}"}}}}</tool_call>',
             '<thinking>Check.</thinking><tool_call>{"name": "quality_eval", "arguments": {"image_index": 2}}</tool_call>',
             '<thinking>Done.</thinking><answer>{"status": "success", "final_image_index": 1}</answer>']
    for text in turns:
        allowed = replay(g, encode(tok, text), tok)
        assert allowed[0] == (tok.convert_tokens_to_ids("<thinking>"),)  # forced
        assert all(a is not None for a in allowed)


@pytest.mark.parametrize("text", [
    '<thinking>x</thinking><tool_call>{"name": "image_gen", "arguments": {"prompt": "a medium st on the syn_weave"}}</tool_call>',
    # every word is the episode's, but "the at" was never said: not a copy
    '<thinking>x</thinking><tool_call>{"name": "image_gen", "arguments": {"prompt": "a large dark crack (crack) across the at"}}</tool_call>',
    # a prompt ends where a text or a sentence ends
    '<thinking>x</thinking><tool_call>{"name": "image_gen", "arguments": {"prompt": "a large dark"}}</tool_call>',
    '<thinking>x</thinking><tool_call>{"name": "quality_gen", "arguments": {}}</tool_call>',
    '<thinking>x</thinking><tool_call>{"name": "mask_gen", "arguments": {"image_index": 3}}</tool_call>',
    '<thinking>x</thinking><tool_call>{"name": "image_gen", "arguments": {"prompt": ""}}</tool_call>',
])
def test_replay_refuses_what_the_grammar_forbids(tok, text):
    with pytest.raises(ValueError, match="not allowed"):
        replay(TurnGrammar(images=3, texts=TEXTS, copy="bigram"), encode(tok, text), tok)


KR = "syn_marble crack: a long dark crack through the marble. Location: across the marble."
PREFIX = TurnGrammar(images=2, texts=TEXTS + (KR,), sources=(PG, KR))


def _call(prompt):
    return f'<thinking>x</thinking><tool_call>{{"name": "image_gen", "arguments": {{"prompt": "{prompt}"}}}}</tool_call>'


@pytest.mark.parametrize("prompt", [PG, "a large dark crack (crack", "syn_marble crack", "syn_marble crack: a long dark crack"])
def test_prefix_copying_accepts_beginnings_of_pg_and_kr_that_end_where_a_text_ends(tok, prompt):
    assert all(a is not None for a in replay(PREFIX, encode(tok, _call(prompt)), tok))


@pytest.mark.parametrize("prompt", [
    "a normal syn_marble",  # the task line is where a prompt may end, not what it copies
    "a normal syn_marble crack) across the marble",  # a splice of two texts (GRPO found it under bigram copying)
    "a large dark crack through the marble",  # PG and KR share "dark crack": still a splice
    "a large dark",  # not where a text or a sentence ends
    "large dark crack (crack",  # not a beginning
    "Make the defect more visible",  # a review is not a source
])
def test_prefix_copying_refuses_splices_and_other_texts(tok, prompt):
    with pytest.raises(ValueError, match="not allowed"):
        replay(PREFIX, encode(tok, _call(prompt)), tok)


def test_no_image_gen_before_pg_or_kr_has_spoken(tok):
    g = TurnGrammar(images=1, texts=TEXTS)
    with pytest.raises(ValueError, match="not allowed"):
        replay(g, encode(tok, _call(PG)), tok)
    ok = '<thinking>x</thinking><tool_call>{"name": "prompt_gen", "arguments": {}}</tool_call>'
    assert all(a is not None for a in replay(g, encode(tok, ok), tok))


def test_a_stored_grammar_without_a_copy_field_replays_as_bigram():
    d = TurnGrammar(images=2, texts=TEXTS).to_dict()
    assert TurnGrammar.from_dict(d).copy == "prefix"
    del d["copy"], d["sources"]
    assert TurnGrammar.from_dict(d).copy == "bigram"


def test_no_answer_and_no_index_before_an_image_exists(tok):
    g = TurnGrammar(images=1, texts=TEXTS, copy="bigram")
    allowed = replay(g, encode(tok, "<thinking>a</thinking>"), tok)
    assert len(allowed) == 3
    from rollout.grammar import TurnConstraint, vocabulary

    c = TurnConstraint(g, vocabulary(tok))
    for t in encode(tok, "<thinking>a</thinking>"):
        c.advance(t)
    assert c.allowed() == (tok.convert_tokens_to_ids("<tool_call>"),)  # no <answer> with no generated image


def test_thinking_is_capped(tok):
    g = TurnGrammar(images=1, texts=TEXTS, max_think_tokens=2, copy="bigram")
    ids = encode(tok, "<thinking>a b c")
    assert len(ids) == 4
    with pytest.raises(ValueError, match="position 3"):  # a third thinking token is refused
        replay(g, ids, tok)
    assert replay(g, ids[:3] + [tok.convert_tokens_to_ids("</thinking>")], tok)[-1] == (tok.convert_tokens_to_ids("</thinking>"),)


def test_a_prompt_may_splice_the_review_into_the_pg_prompt(tok):
    """PG's prompt and the review share "sharp high contrast": a walk may leave one for the other."""
    g = TurnGrammar(images=2, texts=("a small dark spot on the pill, clearly visible", "Make it more visible: sharp high contrast."),
                    copy="bigram")
    for prompt in ("a small dark spot on the pill, clearly visible", "sharp high contrast"):
        replay(g, encode(tok, f'<thinking>x</thinking><tool_call>{{"name": "image_gen", "arguments": {{"prompt": "{prompt}"}}}}</tool_call>'), tok)


@pytest.fixture(scope="module")
def engine(tiny_models):
    return HFEngine(str(tiny_models["text"]), seed=0)


def _prompt(engine):
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": "Category: syn_marble."}],
                                                add_generation_prompt=True, tokenize=True, return_dict=False)


@pytest.mark.parametrize("images", [1, 3])
def test_untrained_policy_under_the_grammar_writes_parsable_turns(engine, images):
    """An untrained policy samples garbage freely; under the grammar every finished turn is
    a valid call or answer whose prompt is a copy of the episode's texts."""
    g = TurnGrammar(images=images, texts=TEXTS, max_think_tokens=6, sources=(PG,)).to_dict()
    stops = [engine.tokenizer.convert_tokens_to_ids(t) for t in ("</tool_call>", "</answer>")]
    reqs = [GenRequest(_prompt(engine), {"temperature": 1.0, "max_tokens": 160, "grammar": g, "stop_token_ids": stops})
            for _ in range(12)]
    for res in engine.generate_batch(reqs):
        assert res.stop_reason == "completed"
        turn = parse_turn(engine.tokenizer.decode(res.token_ids, skip_special_tokens=False))
        assert isinstance(turn.action, (ToolCall, Answer)) and turn.format_ok
        if isinstance(turn.action, ToolCall) and turn.action.name == "image_gen":
            words = re.findall(r"[A-Za-z0-9_]+", turn.action.arguments["prompt"])
            _, edges, _ = copy_graph(TEXTS)
            assert all(b in {x for nxt in edges.get(a, {}).values() for x in nxt} for a, b in zip(words, words[1:]))
        if images == 1:
            assert isinstance(turn.action, ToolCall) and turn.action.name in ("prompt_gen", "knowledge", "image_gen")


def test_constrained_logprobs_are_the_learners(engine, tok):
    """What the engine returns is what the learner recomputes under the replayed grammar:
    the ratio of an on-policy step is exactly 1."""
    from policy.learner import batch_from_episodes, response_log_probs

    g = TurnGrammar(images=3, texts=TEXTS, max_think_tokens=6, sources=(PG,)).to_dict()
    p = _prompt(engine)
    stops = [tok.convert_tokens_to_ids(t) for t in ("</tool_call>", "</answer>")]
    res = engine.generate_batch([GenRequest(p, {"temperature": 1.0, "max_tokens": 160, "grammar": g,
                                                "stop_token_ids": stops}) for _ in range(3)])
    episodes = [{"episode_id": f"e{i}", "group": "g", "prompt_ids": p, "response_ids": r.token_ids,
                 "response_mask": [1] * len(r.token_ids), "response_logprobs": r.log_probs, "turn_grammars": [g]}
                for i, r in enumerate(res)]
    batch = batch_from_episodes(episodes, [0.0, 1.0, 2.0], pad_id=0, tokenizer=tok)
    with torch.no_grad():
        logp = response_log_probs(engine.model, batch)
    mask = batch.batch["response_mask"].bool()
    assert torch.allclose(logp[mask], batch.batch["old_log_probs"][mask], atol=1e-4)
    forced = batch.batch["allowed_sets"].sum(-1)  # a forced token (one allowed id) has log-prob 0
    idx = batch.batch["allowed_idx"]
    for i in range(3):
        for t in range(len(res[i].token_ids)):
            if idx[i, t] >= 0 and forced[i, idx[i, t]] == 1:
                assert abs(res[i].log_probs[t]) < 1e-6
    free = batch_from_episodes([{**e, "turn_grammars": []} for e in episodes], [0.0, 1.0, 2.0], pad_id=0, tokenizer=tok)
    with torch.no_grad():
        unconstrained = response_log_probs(engine.model, free)
    assert (unconstrained[mask] <= logp[mask] + 1e-6).all() and (unconstrained[mask] < logp[mask] - 1e-3).any()


def test_continuous_decoder_samples_under_the_grammar(engine, tok):
    from policy.continuous import ContinuousDecoder

    g = TurnGrammar(images=2, texts=TEXTS, max_think_tokens=4, sources=(PG,)).to_dict()
    stops = [tok.convert_tokens_to_ids(t) for t in ("</tool_call>", "</answer>")]
    dec = ContinuousDecoder(engine, 4)
    got = []
    dec.admit([GenRequest(_prompt(engine), {"temperature": 1.0, "max_tokens": 160, "grammar": g, "stop_token_ids": stops})
               for _ in range(4)], [got.append] * 4)
    while dec.active:
        dec.step()
    assert len(got) == 4
    for r in got:
        assert replay(TurnGrammar.from_dict(g), r.token_ids, tok)  # every sampled token was allowed
        assert isinstance(parse_turn(tok.decode(r.token_ids, skip_special_tokens=False)).action, (ToolCall, Answer))


def test_masks_keep_free_rows_untouched():
    from policy.sampling import AllowedMasks

    logits = torch.randn(3, 10)
    out = AllowedMasks().apply(logits, [None, (2, 5), ()])
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    assert torch.isinf(out[1]).sum() == 8 and out[1, 2] == logits[1, 2]
    assert np.isfinite(torch.log_softmax(out[1], -1)[[2, 5]].numpy()).all()


def test_a_dead_end_frees_the_rest_of_the_turn_in_the_engine_and_the_replay_alike(tok, monkeypatch):
    """Where no token spells a way on, the constraint ends and the turn continues freely — a
    special token sampled then must not crash the decoder (it did: KeyError in advance), and
    the learner's replay must see the same free positions."""
    from rollout.grammar import TurnConstraint, vocabulary

    g = TurnGrammar(images=2, texts=TEXTS, sources=(PG,))
    head = encode(tok, "<thinking>a</thinking><tool_call>")
    monkeypatch.setattr(TurnConstraint, "_json_ids", lambda self: ())
    c = TurnConstraint(g, vocabulary(tok))
    for t in head:
        c.advance(t)
    assert c.allowed() == () and c.done
    c.advance(tok.eos_token_id)  # free now: no error
    tail = [tok.eos_token_id, head[-1]]
    allowed = replay(g, head + tail, tok)
    assert allowed[: len(head)] == replay(g, head, tok) and allowed[len(head):] == [None, None]
