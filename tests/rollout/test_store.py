import numpy as np
import pandas as pd
import pytest

from rollout.store import TrajectoryStore


def record(eid="ep-1", n_images=2):
    rng = np.random.default_rng(0)
    return {
        "episode_id": eid, "task": {"task_id": "t", "category": "syn_pill", "defect_type": "crack", "image_path": "x", "seed": 0},
        "prompt_ids": [1, 2, 3], "response_ids": [4, 5, 6, 7], "response_mask": [1, 1, 0, 1],
        "response_logprobs": [-0.1, -0.2, 0.0, -0.3], "tool_log": [{"name": "image_gen", "ok": True}],
        "qe_scores": [{"image_index": 1, "quality_score": 3.0}], "actions": ["image_gen", "answer"],
        "format_ok": [True, True], "turns": 2, "status": "answer", "answer": {"final_image_index": 1},
        "images": [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(n_images)],
        "image_meta": [{"source": "normal"}, {"prompt": "p"}], "masks": {1: np.full((16, 16), 255, np.uint8)},
        "timings": {"generate_s": 0.1, "tools_s": 0.2},
    }


def test_write_read_roundtrip_and_rewrite_is_noop(tmp_path):
    store = TrajectoryStore(tmp_path)
    rec = record()
    assert store.write(rec, {"node_id": "n1", "attempt": 2}) is True
    assert store.write(record(), {"node_id": "n2"}) is False
    df = store.read()
    assert len(df) == 1 and df.loc[0, "node_id"] == "n1" and df.loc[0, "attempt"] == 2
    assert list(df.loc[0, "response_mask"]) == [1, 1, 0, 1]
    assert list(df.loc[0, "response_logprobs"]) == pytest.approx([-0.1, -0.2, 0.0, -0.3])
    assert np.array_equal(store.load_image(df.loc[0, "image_paths"][1]), rec["images"][1])
    # readable as a plain Parquet folder by pandas
    assert len(pd.read_parquet(tmp_path / "episodes")) == 1


def test_bad_episode_id_and_leftover_temp_files_are_ignored(tmp_path):
    store = TrajectoryStore(tmp_path)
    with pytest.raises(ValueError):
        store.write(record("../escape"))
    (store.episodes / ".ep-2.parquet.123.tmp").write_bytes(b"half a file")
    store.write(record("ep-3"))
    assert store.ids() == ["ep-3"] and len(store.read()) == 1


def test_a_truncated_episode_file_is_named_skipped_and_replaced(tmp_path, capsys):
    store = TrajectoryStore(tmp_path)
    for eid in ("ep-1", "ep-2"):
        store.write(record(eid))
    torn = store.path_of("ep-2")
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])  # torn mid-write by something else
    assert store.ids() == ["ep-1"] and not store.has("ep-2")
    assert f"{torn} is damaged" in capsys.readouterr().err
    assert list(store.read().episode_id) == ["ep-1"]  # the reader goes on with what is intact
    assert store.write(record("ep-2")) is True  # the re-run episode replaces the damaged file
    assert store.ids() == ["ep-1", "ep-2"] and len(store.read()) == 2
