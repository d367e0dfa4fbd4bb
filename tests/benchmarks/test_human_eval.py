"""Good-sample rate intervals and rater agreement against hand computations."""
import pytest

from benchmarks.human_eval import agreement, cohen_kappa, fleiss_kappa, good_rates, wilson


def test_wilson_interval_known_values():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0 and wilson(0, 0) == (0.0, 1.0)


def _r(rater, sample, verdict, source="agent"):
    return {"rater": rater, "sample": sample, "verdict": verdict, "source": source, "category": "c", "defect": "d"}


def test_kappas_equal_a_hand_computation():
    ratings = [_r("a", "1", "good"), _r("b", "1", "good"), _r("a", "2", "good"), _r("b", "2", "bad"),
               _r("a", "3", "bad"), _r("b", "3", "bad"), _r("a", "4", "good")]  # sample 4: one rater, left out
    # per-sample agreement 1, 0, 1 -> 2/3; p(good) = 3/6 -> chance 1/2; kappa = (2/3 - 1/2) / (1/2)
    assert fleiss_kappa(ratings) == pytest.approx(1 / 3)
    # Cohen: each rater's own marginals, a says good 2/3, b 1/3 -> chance 2/9 + 2/9; (2/3 - 4/9) / (5/9)
    assert cohen_kappa(ratings, "a", "b") == pytest.approx(0.4)
    assert agreement(ratings)["samples_rated_by_two_or_more"] == 3
    assert fleiss_kappa([_r("a", "1", "good")]) is None  # nobody rated the same sample twice


def test_good_rates_by_source():
    ratings = [_r("a", str(i), "good" if i < 8 else "bad") for i in range(10)] + [_r("a", "r", "good", "real")]
    rows = {r["source"]: r for r in good_rates(ratings, ["source"])}
    assert rows["agent"]["rate"] == 0.8 and (rows["agent"]["low"], rows["agent"]["high"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert rows["real"]["ratings"] == 1
