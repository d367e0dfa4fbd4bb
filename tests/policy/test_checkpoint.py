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
