"""The engine's decode-step pieces: the preallocated KV cache and grouped-query attention."""
import torch

from policy.attention import GROUPED_SDPA, grouped_sdpa_attention, register
from policy.kv_buffer import PreallocatedLayer, preallocated_cache


def test_preallocated_layer_holds_what_cat_would_and_grows_past_capacity():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(3, 2, n, 8, generator=g) for n in (5, 1, 1, 4)]
    layer = PreallocatedLayer(capacity=7)
    for i, c in enumerate(chunks):
        k, v = layer.update(c, -c)
        ref = torch.cat(chunks[: i + 1], dim=2)
        assert torch.equal(k, ref) and torch.equal(v, -ref)
        assert layer.get_seq_length() == ref.shape[2] and layer.keys is k
    assert layer.capacity == 14  # 11 tokens written into 7: doubled once


def test_preallocated_cache_starts_from_a_prefix():
    prefix = [(torch.ones(2, 1, 3, 4) * i, -torch.ones(2, 1, 3, 4) * i) for i in range(2)]
    cache = preallocated_cache(2, 10, prefix)
    assert cache.get_seq_length() == 3 and cache.layers[1].capacity == 10
    k, v = cache.update(torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4), layer_idx=1)
    assert k.shape == (2, 1, 4, 4) and torch.equal(k[:, :, :3], prefix[1][0]) and torch.equal(v[:, :, 3], torch.zeros(2, 1, 4))


class _Attn(torch.nn.Module):
    num_key_value_groups, is_causal = 3, True


def test_grouped_decode_attention_equals_repeated_heads_under_a_padding_mask():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(4, 6, 1, 16, generator=g), torch.randn(4, 2, 30, 16, generator=g), torch.randn(4, 2, 30, 16, generator=g)
    mask = torch.ones(4, 1, 1, 30, dtype=torch.bool)
    mask[0, ..., :12] = False
    mask[2, ..., 5:9] = False  # a hole, as a cached prefix padded to the batch's longest leaves
    out, _ = grouped_sdpa_attention(_Attn(), q, k, v, mask, scaling=0.25)
    ref, _ = sdpa_attention_forward(_Attn(), q, k, v, mask, scaling=0.25)
    assert out.shape == ref.shape == (4, 1, 6, 16)
    assert torch.allclose(out, ref, atol=1e-6)
    # several query tokens (prefill) take transformers' own path
    q2 = torch.randn(4, 6, 3, 16, generator=g)
    m2 = torch.ones(4, 1, 3, 30, dtype=torch.bool)
    assert torch.equal(grouped_sdpa_attention(_Attn(), q2, k, v, m2)[0], sdpa_attention_forward(_Attn(), q2, k, v, m2)[0])


def test_tiny_model_decodes_the_same_with_grouped_attention_and_the_preallocated_cache(tiny_models):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_models["text"])).eval()
    assert model.config.num_attention_heads != model.config.num_key_value_heads
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(10, 1000, (3, 40), generator=g)
    attn = torch.ones(3, 40, dtype=torch.long)
    attn[0, :9] = 0
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, -4:]
        model.set_attn_implementation(register())
        assert model.config._attn_implementation == GROUPED_SDPA
        past = preallocated_cache(model.config.num_hidden_layers, 38)  # too small on purpose: must grow
        model(input_ids=ids[:, :36], attention_mask=attn[:, :36], position_ids=pos[:, :36], past_key_values=past)
        steps = [model(input_ids=ids[:, t:t + 1], attention_mask=attn[:, :t + 1], position_ids=pos[:, t:t + 1],
                       past_key_values=past).logits[:, -1] for t in range(36, 40)]
    assert torch.allclose(torch.stack(steps, 1), ref, atol=1e-4)
