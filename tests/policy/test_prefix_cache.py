"""The engine's prefix cache: longest common prefix, superseding, LRU by tokens."""
import pytest
import torch

from policy.prefix_cache import PrefixCache, common_prefix


def kv(n, layers=2):
    """Per layer (keys, values) of shape (heads=1, n, dim=1) holding the position index."""
    t = torch.arange(n, dtype=torch.float32).view(1, n, 1)
    return [(t.clone(), -t.clone()) for _ in range(layers)]


def test_common_prefix():
    import numpy as np

    assert common_prefix(np.array([1, 2, 3]), np.array([1, 2, 4, 5])) == 2
    assert common_prefix(np.array([1, 2]), np.array([1, 2, 3])) == 2
    assert common_prefix(np.array([9]), np.array([1])) == 0


def test_lookup_takes_the_longest_shared_prefix_and_leaves_the_last_token():
    c = PrefixCache(1000)
    c.store([1, 2, 3, 4], kv(4))
    c.store([1, 2, 7, 8, 9], kv(5))
    n, got = c.lookup([1, 2, 7, 8, 5, 6])
    assert n == 4 and got[0][0].flatten().tolist() == [0, 1, 2, 3] and got[1][1].flatten().tolist() == [0, -1, -2, -3]
    n, _ = c.lookup([1, 2, 3, 4])  # the whole prompt is cached: its last token still runs
    assert n == 3
    assert c.lookup([5, 6]) == (0, None)
    assert c.stats()["prefix_hits"] == 2 and c.stats()["prefix_lookups"] == 3


def test_a_longer_turn_supersedes_its_prefix_and_lru_evicts_by_tokens():
    c = PrefixCache(10)
    c.store([1, 2, 3], kv(3))
    c.store([1, 2, 3, 4, 5], kv(5))  # the same episode's next turn
    assert len(c) == 1 and c.tokens == 5
    c.store([7, 8, 9, 10], kv(4))
    c.lookup([1, 2, 3, 4, 5, 6])  # touch the first: the second is now least recently used
    c.store([20, 21], kv(2))  # 11 tokens > 10: evict the LRU entry
    assert c.tokens == 7 and c.lookup([7, 8, 9, 10, 11]) == (0, None)
    c.store(list(range(100, 120)), kv(20))  # longer than the whole cache: not kept
    assert c.tokens == 7
    c.clear()
    assert len(c) == 0 and c.tokens == 0


def test_disabled_and_invalid():
    c = PrefixCache(0)
    c.store([1, 2, 3], kv(3))
    assert not c.enabled and len(c) == 0 and c.lookup([1, 2, 3, 4]) == (0, None)
    with pytest.raises(ValueError, match="prefix_cache_tokens"):
        PrefixCache(-1)


def test_prefill_buckets_keep_first_turns_apart_from_cached_ones():
    from policy.gen_types import prefill_buckets

    assert prefill_buckets([40, 300, 60, 35, 280]) == [[3, 0, 2], [4, 1]]
    assert prefill_buckets([10, 10, 10]) == [[0, 1, 2]]
    assert prefill_buckets([5, 2000]) == [[0], [1]]
    assert prefill_buckets([]) == []

