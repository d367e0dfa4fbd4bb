"""Constrained decoding: the turn grammar, the engine sampling under it, and the learner's
log-probs under the same constrained distribution."""
import re

import numpy as np
import pytest
import torch

from policy.engine import GenRequest, HFEngine
from rollout.grammar import TurnGrammar, lexicon_from, replay
from rollout.parser import Answer, ToolCall, parse_turn

PG = "a large dark crack (crack) across the marble, sharp high contrast"
LEX = lexicon_from(["Category: syn_marble. Defect type: crack.", PG])


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_lexicon_has_the_words_and_their_parts():
    assert {"syn_marble", "syn", "marble", "crack", "sharp", "the", "a"} <= set(LEX)
    assert "st" not in LEX and "syn_weave" not in LEX


def test_replay_accepts_the_canonical_turns(tok):
    g = TurnGrammar(images=3, lexicon=LEX)
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
    '<thinking>x</thinking><tool_call>{"name": "quality_gen", "arguments": {}}</tool_call>',
    '<thinking>x</thinking><tool_call>{"name": "mask_gen", "arguments": {"image_index": 3}}</tool_call>',
    '<thinking>x</thinking><tool_call>{"name": "image_gen", "arguments": {"prompt": ""}}</tool_call>',
])
def test_replay_refuses_what_the_grammar_forbids(tok, text):
    with pytest.raises(ValueError, match="not allowed"):
        replay(TurnGrammar(images=3, lexicon=LEX), encode(tok, text), tok)


def test_no_answer_and_no_index_before_an_image_exists(tok):
    g = TurnGrammar(images=1, lexicon=LEX)
    allowed = replay(g, encode(tok, "<thinking>a</thinking>"), tok)
    assert len(allowed) == 3
    from rollout.grammar import TurnConstraint, vocabulary

    c = TurnConstraint(g, vocabulary(tok))
    for t in encode(tok, "<thinking>a</thinking>"):
        c.advance(t)
    assert c.allowed() == (tok.convert_tokens_to_ids("<tool_call>"),)  # no <answer> with no generated image


def test_thinking_is_capped(tok):
    g = TurnGrammar(images=1, lexicon=LEX, max_think_tokens=2)
    ids = encode(tok, "<thinking>a b c")
    assert len(ids) == 4
    with pytest.raises(ValueError, match="position 3"):  # a third thinking token is refused
        replay(g, ids, tok)
    assert replay(g, ids[:3] + [tok.convert_tokens_to_ids("</thinking>")], tok)[-1] == (tok.convert_tokens_to_ids("</thinking>"),)


def test_regex_matches_the_canonical_call():
    g = TurnGrammar(images=2, lexicon=LEX)
    assert re.fullmatch(g.regex(), f'{{"name": "image_gen", "arguments": {{"prompt": "{PG}"}}}}')
    assert re.fullmatch(g.regex(), '{"name": "mask_gen", "arguments": {"image_index": 1}}')
    assert not re.fullmatch(g.regex(), '{"name": "image_gen", "arguments": {"prompt": "a st on it"}}')


@pytest.fixture(scope="module")
def engine(tiny_models):
    return HFEngine(str(tiny_models["text"]), seed=0)


def _prompt(engine):
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": "Category: syn_marble."}],
                                                add_generation_prompt=True, tokenize=True, return_dict=False)


@pytest.mark.parametrize("images", [1, 3])
def test_untrained_policy_under_the_grammar_writes_parsable_turns(engine, images):
    """An untrained policy samples garbage freely; under the grammar every finished turn is
    a valid call or answer whose prompt words come from the lexicon."""
    g = TurnGrammar(images=images, lexicon=LEX, max_think_tokens=6).to_dict()
    stops = [engine.tokenizer.convert_tokens_to_ids(t) for t in ("</tool_call>", "</answer>")]
    reqs = [GenRequest(_prompt(engine), {"temperature": 1.0, "max_tokens": 160, "grammar": g, "stop_token_ids": stops})
            for _ in range(12)]
    for res in engine.generate_batch(reqs):
        assert res.stop_reason == "completed"
        turn = parse_turn(engine.tokenizer.decode(res.token_ids, skip_special_tokens=False))
        assert isinstance(turn.action, (ToolCall, Answer)) and turn.format_ok
        if isinstance(turn.action, ToolCall) and turn.action.name == "image_gen":
            assert set(re.findall(r"[A-Za-z0-9_]+", turn.action.arguments["prompt"])) <= set(LEX)
        if images == 1:
            assert isinstance(turn.action, ToolCall) and turn.action.name in ("prompt_gen", "knowledge", "image_gen")


def test_constrained_logprobs_are_the_learners(engine, tok):
    """What the engine returns is what the learner recomputes under the replayed grammar:
    the ratio of an on-policy step is exactly 1."""
    from policy.learner import batch_from_episodes, response_log_probs

    g = TurnGrammar(images=3, lexicon=LEX, max_think_tokens=6).to_dict()
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

    g = TurnGrammar(images=2, lexicon=LEX, max_think_tokens=4).to_dict()
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
