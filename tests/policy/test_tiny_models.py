import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from rollout.format import CALL_CLOSE, CALL_OPEN, EPISODE_TAGS, IM_END


def test_text_model_save_load_generate(tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models["text"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["text"])
    for tag in EPISODE_TAGS:
        assert len(tok.encode(tag, add_special_tokens=False)) == 1, tag
    text = f'{CALL_OPEN} {{"name": "image_gen"}} {CALL_CLOSE}'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    enc = tok.apply_chat_template([{"role": "user", "content": "syn_pill crack"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    assert tok.decode(enc["input_ids"][0]).endswith("<|im_start|>assistant\n")
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=12, do_sample=True)
    assert out.shape[0] == 1 and enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 12
    assert model.config.eos_token_id == tok.convert_tokens_to_ids(IM_END)


def test_text_model_reload_is_bit_identical(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["text"])
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_vl_model_generates_with_an_image(tiny_models):
    proc = AutoProcessor.from_pretrained(tiny_models["vl"])
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["vl"])
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "judge the defect"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    inputs = proc(text=[text], images=[image], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() > 1  # image expanded to patches
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
