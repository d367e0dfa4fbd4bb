"""Bad policy output: ≥ 10,000 generated turns through the parser and the tool-argument
checks; no exception escapes and every case is an action or a typed error."""
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.fuzz import TAGS, check_turn, fuzz, random_turn, tool_schemas

pytestmark = pytest.mark.reliability
SCHEMAS = tool_schemas()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
fragments = st.one_of(st.sampled_from(TAGS), st.text(max_size=40),
                      st.builds(lambda seed: random_turn(random.Random(seed)), st.integers(0, 2**32)),
                      st.builds(lambda name, args: '{"name": %s, "arguments": %s}' % (
                          __import__("json").dumps(name), __import__("json").dumps(args)),
                          st.sampled_from(["image_gen", "mask_gen", "quality_eval", "knowledge", "prompt_gen", "x"]),
                          json_values))


@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(st.lists(fragments, max_size=8), st.booleans())
def test_hypothesis_turns_never_crash_and_map_to_typed_outcomes(parts, truncated):
    kind = check_turn("".join(parts), truncated, SCHEMAS)
    assert kind in ("tool_call", "answer") or kind.startswith("error:")


def test_seeded_fuzz_of_5000_turns_covers_every_outcome():
    counts = fuzz(5000, seed=1)
    assert counts["crashes"] == 0 and sum(counts.values()) == 5000
    assert counts.get("tool_call", 0) > 0 and counts.get("answer", 0) > 0
    assert sum(v for k, v in counts.items() if k.startswith("error:")) > 1000
