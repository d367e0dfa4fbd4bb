import torch
from transformers import AutoModelForCausalLM

from policy.checkpoint import CheckpointManager


def test_rotation_keeps_the_last_good_and_ignores_incomplete(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["text"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ck = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        ck.save(step, model, opt, state={"data_position": step * 10})
    assert ck.steps() == [2, 3] and ck.latest().name == "step_3"
    # a crash mid-write leaves a temp folder, never a step_N folder or a moved tracker
    (tmp_path / ".tmp-step_4").mkdir()
    (tmp_path / "step_5").mkdir()  # no COMPLETE marker: not a checkpoint
    assert ck.latest().name == "step_3" and ck.steps() == [2, 3]
    state = ck.load(ck.latest(), model, opt)
    assert state == {"step": 3, "data_position": 30}
    (tmp_path / "latest").unlink()  # tracker lost: fall back to the newest complete folder
    assert ck.latest().name == "step_3"


def test_a_corrupt_weight_file_or_a_tracker_naming_a_missing_step_falls_back_and_says_so(tiny_models, tmp_path, capsys):
    import pytest

    model = AutoModelForCausalLM.from_pretrained(tiny_models["text"])
    ck = CheckpointManager(tmp_path, keep_last=3)
    for step in (1, 2):
        ck.save(step, model)
    weights = next((tmp_path / "step_2" / "model").glob("*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte, same size, marker present
    weights.write_bytes(bytes(blob))
    assert ck.latest().name == "step_1"
    err = capsys.readouterr().err
    assert f"{weights} is corrupt" in err and "using" in err and str(tmp_path / "step_1") in err
    with pytest.raises(FileNotFoundError, match="is corrupt"):
        CheckpointManager.read(tmp_path / "step_2")
    (tmp_path / "latest").write_text("step_7")
    assert ck.latest().name == "step_1"
    assert "names step_7, which does not exist" in capsys.readouterr().err


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tiny_models, tmp_path, monkeypatch):
    import errno

    import pytest

    model = AutoModelForCausalLM.from_pretrained(tiny_models["text"])
    ck = CheckpointManager(tmp_path, keep_last=1)
    ck.save(1, model)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left"):
        ck.save(2, model)
    assert ck.latest().name == "step_1" and ck.steps() == [1] and not (tmp_path / ".tmp-step_2").exists()
