"""The QE judge scores the requested type: calibration on the real anomalies of the
synthetic set (``bench judge``), and the verdicts the gate and the reward rely on."""
from actors.knowledge_base import load_knowledge_base
from actors.procedural import render_defect, spec_from_words
from actors.quality_eval import MetricJudge, judge, passes
from benchmarks.judge import calibrate, winner, write_report
from rollout.data import open_dataset

KB = load_knowledge_base()


def test_calibration_on_the_real_anomalies(syn_root96, tmp_path):
    res = calibrate(open_dataset("mvtec", syn_root96), syn_root96, MetricJudge(), progress=False)
    assert res["anomalies"] == 4 * 3 * 6 and res["unpaired"] == 0
    assert res["judge_type_accuracy"] >= 0.95  # its own type wins (measured 0.986)
    assert res["real_pass"] >= 0.9  # real anomalies pass (0.93)
    assert res["wrong_type_fail"] >= 0.97  # judged as another type they fail (0.993)
    assert res["normal_fail"] == 1.0
    for cat in ("syn_marble", "syn_pill"):  # the target categories: a perfect diagonal
        m = res["confusion"][cat]
        assert all(m[d].get(d, 0) == 6 for d in m), m
    paths = write_report(res, tmp_path)
    assert all(p.is_file() for p in paths) and "| crack |" in paths[0].read_text()


def test_a_blob_asked_to_be_a_crack_fails_and_the_review_says_so(pill):
    crack = KB.get("syn_pill", "crack")
    box = (30, 35, 66, 61)
    blob, _ = render_defect(pill.image, box, spec_from_words("spot", "dark", "medium", "high"), 3, allowed=pill.foreground)
    line, _ = render_defect(pill.image, box, spec_from_words("crack", "dark", "medium", "high"), 3, allowed=pill.foreground)
    as_blob, as_line = judge(pill.image, blob, box, crack), judge(pill.image, line, box, crack)
    assert as_line.passed and not as_blob.passed
    assert as_blob.location_score == 5.0 and as_blob.quality_score < 1.0  # well placed, wrong shape: fails
    assert as_blob.review == "The defect should look like a crack (line), not a blob-shaped mark."
    assert as_blob.measurement.group == "blob" and as_line.measurement.group == "line"


def test_wrong_colour_and_invisible_change_fail(marble):
    stain = KB.get("syn_marble", "stain")  # red, medium
    box = (30, 30, 66, 66)
    dark, _ = render_defect(marble.image, box, spec_from_words("spot", "dark", "medium", "medium"), 1)
    red, _ = render_defect(marble.image, box, spec_from_words("spot", "red", "medium", "medium"), 1)
    assert judge(marble.image, red, box, stain).passed
    v = judge(marble.image, dark, box, stain)
    assert not v.passed and v.review == "Use a red colour for the stain."
    faint = marble.image.copy()
    faint[40:44, 40:44] += 3  # below what counts as a change
    v = judge(marble.image, faint, box, stain)
    assert (v.location_score, v.quality_score, v.passed) == (0.0, 0.0, False) and "No visible change" in v.review


def test_pass_needs_both_scores():
    assert passes({"location_score": 3.5, "quality_score": 5.0})
    assert not passes({"location_score": 5.0, "quality_score": 3.4})  # the mean (4.2) used to pass this
    assert not passes({"location_score": 2.0, "quality_score": 5.0}, pass_score=3.5)


def test_winner_is_strict():
    s = lambda q, l=5.0: {"quality_score": q, "location_score": l}  # noqa: E731
    assert winner({"a": s(4.0), "b": s(1.0)}) == "a"
    assert winner({"a": s(4.0), "b": s(4.0)}) is None


def test_vlm_rubric_names_the_type_properties():
    from actors.quality_eval import rubric

    text = rubric(KB.get("syn_marble", "crack"))
    assert "crack, line-shaped" in text and "dark" in text and "large" in text and "below 3.5" in text
