"""SFT of a vision-language policy: trajectories carry their images, the loss is on policy
tokens only, the images reach the model's own forward, the vision tower stays frozen."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from actors.config import ToolsConfig
from actors.registry import build_tool
from policy.config import SFTConfig
from policy.sft import collate, examples_from_parquet, policy_loss, train_sft, vision_parameters
from policy.sft_data import SyntheticNormals, TrajectoryBuilder, write_sft_dataset
from rollout.data import MVTecAD
from rollout.format import IMAGE_PAD, TOOL_NAMES
from rollout.vision import VisionRenderer, processor_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vl_data(syn_root, tiny_models, tmp_path_factory):
    cfg = ToolsConfig()
    cfg.knowledge.embedder = "hashing"
    builder = TrajectoryBuilder({n: build_tool(n, cfg) for n in TOOL_NAMES}, SyntheticNormals(syn_root))
    ds = MVTecAD(syn_root, ["syn_washer"])
    trajs = [t for s in ds.anomalies("syn_washer")[:6] for v in range(2) if (t := builder.build(s, v))][:6]
    out = tmp_path_factory.mktemp("vlsft")
    path = str(tiny_models["vl"])
    write_sft_dataset(trajs, AutoTokenizer.from_pretrained(path), out, VisionRenderer(processor_for(path)))
    return out, trajs, path


def test_vl_trajectories_carry_their_images_in_token_order(vl_data):
    out, trajs, path = vl_data
    tok = AutoTokenizer.from_pretrained(path)
    pad = tok.convert_tokens_to_ids(IMAGE_PAD)
    renderer = VisionRenderer(processor_for(path))
    rows = pq.read_table(out / "sft.parquet").to_pylist()
    for row, t in zip(rows, trajs):
        assert row["shown_images"] == list(range(t.n_generations + 1))  # the normal, then each generation
        assert len(row["image_paths"]) == len(t.images) == t.n_generations + 1
        pads = (row["prompt_ids"] + row["response_ids"]).count(pad)
        assert pads == sum(renderer.image_tokens(im) for im in t.images)
        # image pads are context, never targets
        resp_pads = [m for i, m in zip(row["response_ids"], row["response_mask"]) if i == pad]
        assert resp_pads and not any(resp_pads)


def test_the_images_reach_the_forward_and_change_the_loss(vl_data):
    out, _, path = vl_data
    examples = examples_from_parquet(out / "sft.parquet")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    processor = processor_for(path)
    batch = collate(examples[:2], 0, processor.image_processor)
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
    with torch.no_grad():
        loss = policy_loss(model, batch)
        dark = dict(batch, pixel_values=torch.zeros_like(batch["pixel_values"]))
        assert float(policy_loss(model, dark)) != pytest.approx(float(loss), abs=1e-6)
    with pytest.raises(ValueError, match="image processor"):
        collate(examples[:1], 0, None)


def test_vl_sft_trains_the_language_model_and_keeps_the_vision_tower(vl_data, tmp_path):
    out, _, path = vl_data
    cfg = SFTConfig(steps=3, batch_size=2, save_every=3, warmup_steps=1, lr=1e-2)
    res = train_sft(path, out / "sft.parquet", tmp_path, cfg, progress=False)
    before = AutoModelForImageTextToText.from_pretrained(path)
    after = AutoModelForImageTextToText.from_pretrained(res.checkpoint)
    assert processor_for(str(res.checkpoint)) is not None  # the checkpoint serves as a VL policy
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    frozen = {id(p) for p in vision_parameters(before)}
    vision = [n for n, p in b.items() if id(p) in frozen]
    assert vision and all(torch.equal(b[n], a[n]) for n in vision)  # sft.freeze_vision
    changed = [n for n in b if n not in vision and not torch.equal(b[n], a[n])]
    assert len(changed) >= 0.9 * (len(b) - len(vision)), "the language model's parameters should all move"
    assert np.isfinite(res.first_loss) and np.isfinite(res.last_loss)
