"""Continuous batching: KV slots, the decoder (requests joining mid-run) and its async driver."""
import asyncio

import pytest
import torch

from policy.continuous import ContinuousDecoder
from policy.continuous_batcher import ContinuousBatcher
from policy.engine import HFEngine
from policy.gen_types import GenRequest
from policy.kv_slots import KVSlots


def chat(engine, text):
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)


TEXTS = ("a", "syn_marble hole with a much longer prompt text here", "x y", "syn_pill crack on the left")


def test_slots_add_remove_and_grow():
    slots = KVSlots(num_layers=2, rows=3, kv_heads=1, head_dim=2, width=4)
    seqs = [[(torch.full((1, n, 2), float(10 * i + layer)),) * 2 for layer in range(2)] for i, n in enumerate((2, 5, 3))]
    assert [slots.add(s) for s in seqs] == [0, 1, 2] and slots.free == 0
    assert slots.width == 8  # the 5-token sequence doubled the 4 columns
    assert slots.lengths.tolist() == [2, 5, 3] and slots.mask.sum(1).tolist() == [2, 5, 3]
    slots.remove(0)  # the last sequence moves into slot 0
    assert slots.n == 2 and slots.lengths[:2].tolist() == [3, 5]
    assert torch.equal(slots.sequence(0)[1][0], torch.full((1, 3, 2), 21.0))
    assert torch.equal(slots.mask[0], torch.tensor([1, 1, 1, 0, 0, 0, 0, 0]))
    with pytest.raises(RuntimeError, match="no free"):
        for s in seqs:
            slots.add(s)


def test_requests_joining_a_running_batch_decode_as_each_alone(tiny_models):
    eng = HFEngine(str(tiny_models["text"]), prefix_cache_tokens=100_000)
    prompts = [chat(eng, t) for t in TEXTS]
    params = [{"temperature": 0.0, "max_tokens": m} for m in (5, 9, 12, 7)]
    alone = [HFEngine(str(tiny_models["text"])).generate_batch([GenRequest(p, q)])[0] for p, q in zip(prompts, params)]
    dec = ContinuousDecoder(eng, max_rows=3)
    got = {}

    def keep(i):
        return lambda r: got.__setitem__(i, r)

    dec.admit([GenRequest(prompts[i], params[i]) for i in (0, 1)], [keep(0), keep(1)])
    dec.step()
    dec.step()
    dec.admit([GenRequest(prompts[2], params[2])], [keep(2)])  # joins at step 3
    while 0 not in got:
        dec.step()
    dec.admit([GenRequest(prompts[3], params[3])], [keep(3)])  # takes the freed slot
    while dec.active:
        dec.step()
    for i, ref in enumerate(alone):
        assert got[i].token_ids == ref.token_ids, i
        assert got[i].log_probs == pytest.approx(ref.log_probs, abs=1e-4)
        assert got[i].stop_reason == ref.stop_reason
    assert dec.row_steps == sum(len(got[i].token_ids) - 1 for i in range(4))  # no step for a finished row
    # the finished sequences' keys/values serve their next turns: same reply as from scratch
    turn2 = prompts[1] + got[1].token_ids + chat(eng, "next")
    hits_before = eng.prefix.stats()["prefix_hits"]
    again = ContinuousDecoder(eng, max_rows=2)
    dec_out = {}
    again.admit([GenRequest(turn2, {"temperature": 0.0, "max_tokens": 6})], [keep_into(dec_out, 0)])
    while again.active:
        again.step()
    assert eng.prefix.stats()["prefix_hits"] == hits_before + 1
    assert dec_out[0].token_ids == HFEngine(str(tiny_models["text"])).generate_batch(
        [GenRequest(turn2, {"temperature": 0.0, "max_tokens": 6})])[0].token_ids


def keep_into(d, i):
    return lambda r: d.__setitem__(i, r)


def test_sampled_log_probs_and_stop_tokens_per_row(tiny_models):
    eng = HFEngine(str(tiny_models["text"]), seed=3)
    dec = ContinuousDecoder(eng, max_rows=4)
    out = {}
    p = chat(eng, "syn_pill crack")
    everything = list(range(len(eng.tokenizer)))
    dec.admit([GenRequest(p, {"temperature": 1.0, "max_tokens": 20}),
               GenRequest(p, {"temperature": 0.7, "max_tokens": 20, "stop_token_ids": everything})],
              [keep_into(out, 0), keep_into(out, 1)])
    assert 1 in out and len(out[1].token_ids) == 1 and out[1].stop_reason == "completed"  # ended at admission
    while dec.active:
        dec.step()
    r = out[0]
    with torch.no_grad():
        logits = eng.model(torch.tensor([p + r.token_ids])).logits[0, len(p) - 1:-1]
    ref = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(r.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(ref, torch.tensor(r.log_probs), atol=1e-4)


def test_async_driver_serves_concurrent_callers_and_updates_weights_between_sequences(tiny_models):
    eng = HFEngine(str(tiny_models["text"]))
    batcher = ContinuousBatcher(ContinuousDecoder(eng, max_rows=2), max_wait_ms=5)
    prompts = [chat(eng, t) for t in TEXTS]
    greedy = {"temperature": 0.0, "max_tokens": 8}
    ref = [HFEngine(str(tiny_models["text"])).generate_batch([GenRequest(p, greedy)])[0].token_ids for p in prompts]
    new_weights = {k: v + 0.5 * torch.randn_like(v) for k, v in eng.model.state_dict().items()}

    async def main():
        first = [asyncio.create_task(batcher.submit(GenRequest(p, greedy))) for p in prompts]  # 4 callers, 2 slots
        await asyncio.sleep(0)
        version = asyncio.create_task(batcher.run_exclusive(eng.load_state_dict, new_weights, 7))
        results = await asyncio.gather(*first)
        assert await version == 7
        after = await batcher.submit(GenRequest(prompts[0], greedy))
        return results, after

    results, after = asyncio.run(main())
    assert [r.token_ids for r in results] == ref  # every request queued before the update ran on the old weights
    assert after.token_ids != ref[0]
    assert batcher.requests == 5 and batcher.items / batcher.batches <= 2.0


def test_a_failing_step_fails_the_live_requests_and_the_driver_goes_on(tiny_models):
    eng = HFEngine(str(tiny_models["text"]))
    dec = ContinuousDecoder(eng, max_rows=2)
    batcher = ContinuousBatcher(dec, max_wait_ms=1)
    p = chat(eng, "a")
    real_step = dec.step
    dec.step = lambda: (_ for _ in ()).throw(RuntimeError("boom"))

    async def main():
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(GenRequest(p, {"temperature": 0.0, "max_tokens": 4}))
        dec.step = real_step
        return await batcher.submit(GenRequest(p, {"temperature": 0.0, "max_tokens": 4}))

    assert len(asyncio.run(main()).token_ids) >= 1 and dec.active == 0


def test_a_request_asking_for_no_tokens_is_refused_before_any_work(tiny_models):
    eng = HFEngine(str(tiny_models["text"]))
    dec = ContinuousDecoder(eng, max_rows=2)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        dec.admit([GenRequest(chat(eng, "a"), {"max_tokens": 0})], [lambda r: None])
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        eng.generate_batch([GenRequest(chat(eng, "a"), {"max_tokens": -3})])
    assert dec.active == 0 and eng.counters["prefill_s"] == 0.0
