"""The HF generation engine: log-probs, batching, stops, weight loading."""
import torch
import pytest

from policy.engine import HFEngine
from policy.gen_types import GenRequest


@pytest.fixture(scope="module")
def engine(tiny_models):
    return HFEngine(str(tiny_models["text"]), seed=0)


def prompt(engine, text):
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)


def test_sampled_logprobs_match_a_teacher_forced_pass(engine):
    p = prompt(engine, "syn_pill crack")
    res = engine.generate_batch([GenRequest(p, {"temperature": 1.0, "max_tokens": 24})])[0]
    assert 1 <= len(res.token_ids) <= 24 and len(res.log_probs) == len(res.token_ids)
    with torch.no_grad():
        logits = engine.model(torch.tensor([p + res.token_ids])).logits[0, len(p) - 1:-1]
    ref = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(res.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(ref, torch.tensor(res.log_probs), atol=1e-4)


def test_batched_greedy_equals_single_with_left_padding(engine):
    prompts = [prompt(engine, t) for t in ("a", "syn_marble hole with a much longer prompt text here", "x y")]
    params = {"temperature": 0.0, "max_tokens": 16}
    batch = engine.generate_batch([GenRequest(p, params) for p in prompts])
    for p, b in zip(prompts, batch):
        single = engine.generate_batch([GenRequest(p, params)])[0]
        assert single.token_ids == b.token_ids
        assert single.log_probs == pytest.approx(b.log_probs, abs=1e-4)


def test_budget_and_stop_tokens(engine):
    p = prompt(engine, "go")
    res = engine.generate_batch([GenRequest(p, {"temperature": 1.0, "max_tokens": 5})])[0]
    assert len(res.token_ids) <= 5
    assert res.stop_reason == ("completed" if res.token_ids[-1] == engine.eos_id else "length")
    # every token a stop token: the first sampled token ends the turn
    everything = list(range(len(engine.tokenizer)))
    res = engine.generate_batch([GenRequest(p, {"temperature": 1.0, "max_tokens": 5, "stop_token_ids": everything})])[0]
    assert len(res.token_ids) == 1 and res.stop_reason == "completed"


def test_mixed_sampling_settings_share_a_call(engine):
    p = prompt(engine, "go")
    out = engine.generate_batch([GenRequest(p, {"temperature": 0.0, "max_tokens": 4}),
                                 GenRequest(p, {"temperature": 1.0, "max_tokens": 6})])
    assert len(out) == 2 and len(out[0].token_ids) <= 4 and len(out[1].token_ids) <= 6


def test_load_state_dict_changes_the_policy(tiny_models):
    eng = HFEngine(str(tiny_models["text"]))
    p = prompt(eng, "go")
    before = eng.generate_batch([GenRequest(p, {"temperature": 0.0, "max_tokens": 8})])[0]
    sd = {k: v + 0.5 * torch.randn_like(v) for k, v in eng.model.state_dict().items()}
    assert eng.load_state_dict(sd) == 1
    after = eng.generate_batch([GenRequest(p, {"temperature": 0.0, "max_tokens": 8})])[0]
    assert before.token_ids != after.token_ids  # greedy log-probs are all 0: compare the tokens


def test_sampler_draws_from_the_softmax_distribution(engine):
    """Empirical token frequencies of one step match softmax(logits / T)."""
    p = prompt(engine, "go")
    n = 4000
    out = engine.generate_batch([GenRequest(p, {"temperature": 1.5, "max_tokens": 1})] * n)
    with torch.no_grad():
        logits = engine.model(torch.tensor([p])).logits[0, -1].float()
    probs = torch.softmax(logits / 1.5, -1)
    counts = torch.bincount(torch.tensor([o.token_ids[0] for o in out]), minlength=probs.numel()).float() / n
    top = probs.topk(5).indices
    assert torch.allclose(counts[top], probs[top], atol=4 * (probs[top] / n).sqrt().max() + 0.01)
    assert counts.sum() == pytest.approx(1.0)


def test_prefix_cache_reuses_earlier_turns_without_changing_the_output(tiny_models):
    """Three turns of three episodes (two share their first prompt, as G siblings do), one
    batch per turn: with and without the prefix cache the same tokens and log-probs."""
    path = str(tiny_models["text"])
    plain, cached = HFEngine(path, seed=3), HFEngine(path, seed=3, prefix_cache_tokens=100_000)
    first = [prompt(plain, "syn_pill crack"), prompt(plain, "syn_pill crack"), prompt(plain, "syn_marble hole, longer")]
    observation = plain.tokenizer("<observation>score 0.4</observation>", add_special_tokens=False)["input_ids"]
    params = {"temperature": 1.0, "max_tokens": 12}
    contexts = {"plain": [list(p) for p in first], "cached": [list(p) for p in first]}
    for turn in range(3):
        outs = {}
        for name, eng in (("plain", plain), ("cached", cached)):
            outs[name] = eng.generate_batch([GenRequest(c, params) for c in contexts[name]])
            contexts[name] = [c + o.token_ids + observation for c, o in zip(contexts[name], outs[name])]
        for a, b in zip(outs["plain"], outs["cached"]):
            assert a.token_ids == b.token_ids, turn
            assert a.log_probs == pytest.approx(b.log_probs, abs=1e-4), turn
    stats = cached.prefix.stats()
    assert stats["prefix_hits"] == 6  # turns 2 and 3 of each episode (turn 1 came in one batch)
    assert stats["prefix_reused_fraction"] > 0.5
    assert plain.prefix.stats()["prefix_hits"] == 0
    assert len(cached.prefix) == 3  # one entry per episode: earlier turns were superseded
    assert cached.prefix.lookup(first[0])[0] == len(first[0]) - 1  # a late sibling shares the prompt
    cached.load_state_dict(cached.model.state_dict())
    assert len(cached.prefix) == 0  # new weights: the old keys and values are gone


def test_a_batch_mixing_cached_and_fresh_prompts_decodes_as_each_alone(tiny_models):
    """Rows that must prefill their whole prompt run in their own bucket; greedy output is
    what each row gives alone without any cache."""
    path = str(tiny_models["text"])
    plain, cached = HFEngine(path), HFEngine(path, prefix_cache_tokens=100_000)
    first = prompt(plain, "syn_pill crack")
    greedy = {"temperature": 0.0, "max_tokens": 10}
    turn1 = cached.generate_batch([GenRequest(first, greedy)])[0]
    follow = first + turn1.token_ids + plain.tokenizer("<tool_response>{}</tool_response>", add_special_tokens=False)["input_ids"]
    fresh = prompt(plain, "syn_marble hole, a different and longer task text")
    mixed = cached.generate_batch([GenRequest(follow, greedy), GenRequest(fresh, greedy)])
    assert cached.prefix.stats()["prefix_hits"] == 2  # the fresh prompt shares only the chat preamble
    for p, out in zip((follow, fresh), mixed):
        assert out.token_ids == plain.generate_batch([GenRequest(p, greedy)])[0].token_ids


def test_counters_split_batch_time_and_count_decode_steps(tiny_models):
    eng = HFEngine(str(tiny_models["text"]))
    prompts = [prompt(eng, "go"), prompt(eng, "a longer prompt for the second row")]
    out = eng.generate_batch([GenRequest(p, {"temperature": 0.0, "max_tokens": m}) for p, m in zip(prompts, (3, 7))])
    steps = max(len(o.token_ids) for o in out) - 1  # the first token comes from the prefill forward
    c = eng.counters
    assert c["decode_steps"] == steps and c["decode_row_steps"] == 2 * steps
    assert c["prefill_s"] > 0 and c["kv_s"] > 0 and (c["decode_s"] > 0) == (steps > 0)
