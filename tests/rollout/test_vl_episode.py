"""A vision-language policy's episode: images in the prompt and in image_gen observations,
pads expanded to the processor's count, images sent in order, and the HF engine's VL path."""
import asyncio

import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer

from policy.engine import HFEngine
from policy.gen_types import GenRequest
from rollout.config import EpisodeConfig
from rollout.episode import EpisodeRunner
from rollout.format import IMAGE_PAD, VISION_START
from rollout.tasks import Task
from rollout.vision import VisionRenderer, is_vision_language
from tests.scripted import WELL_FORMED, ScriptedLLM


@pytest.fixture(scope="module")
def vl(tiny_models):
    path = str(tiny_models["vl"])
    return path, AutoTokenizer.from_pretrained(path), AutoProcessor.from_pretrained(path)


def test_vl_episode_shows_each_image_once_with_the_processors_token_count(vl, tools, pill):
    path, tok, processor = vl
    assert is_vision_language(path)
    llm = ScriptedLLM(tok, WELL_FORMED)
    runner = EpisodeRunner(Task("t0", "syn_pill", "crack", "unused.png", seed=5), pill.image, tok, llm, tools,
                           EpisodeConfig(max_turns=10), processor=processor)
    ep = asyncio.run(runner.run())
    assert ep.status == "answer" and all(ep.format_ok)
    assert ep.shown_images == [0, 1, 2]  # the normal image, then each generated one
    pad, start = tok.convert_tokens_to_ids(IMAGE_PAD), tok.convert_tokens_to_ids(VISION_START)
    per_image = VisionRenderer(processor).image_tokens(pill.image)
    grid = processor.image_processor(images=[pill.image], return_tensors="pt")["image_grid_thw"][0]
    assert per_image == int(grid.prod()) // 4 > 0
    assert ep.prompt_ids.count(pad) == per_image and ep.prompt_ids.count(start) == 1
    assert ep.response_ids.count(pad) == 2 * per_image  # two image_gen observations
    assert all(m == 0 for t, m in zip(ep.response_ids, ep.response_mask) if t == pad)  # never policy tokens
    # each request carries the images of its token stream, in order
    for (rid, ids, _), images in zip(llm.requests, llm.images):
        assert len(images) == ids.count(start) and ids.count(pad) == len(images) * per_image
    assert [len(i) for i in llm.images] == [1, 1, 2, 2, 2, 3, 3, 3]
    assert (llm.images[-1][2].size == (pill.image.shape[1], pill.image.shape[0]))


def test_text_episode_has_no_image_tokens(tok, tools, pill):
    llm = ScriptedLLM(tok, WELL_FORMED)
    ep = asyncio.run(EpisodeRunner(Task("t0", "syn_pill", "crack", "unused.png", seed=5), pill.image, tok, llm,
                                   tools, EpisodeConfig(max_turns=10)).run())
    assert ep.shown_images == [] and llm.images == [None] * 8
    assert tok.convert_tokens_to_ids(IMAGE_PAD) not in ep.prompt_ids + ep.response_ids


def test_hf_engine_samples_a_vl_policy_with_images_and_exact_log_probs(vl, pill):
    path, tok, processor = vl
    engine = HFEngine(path, seed=0)
    renderer = VisionRenderer(processor)
    msgs = [{"role": "user", "content": "Category: syn_pill." + renderer.placeholder(pill.image)}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    short = tok.apply_chat_template([{"role": "user", "content": "go"}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False)
    images = VisionRenderer.image_data([pill.image], [0])
    res, plain = engine.generate_batch([GenRequest(prompt, {"temperature": 1.0, "max_tokens": 12}, images),
                                        GenRequest(short, {"temperature": 1.0, "max_tokens": 12})])
    assert 1 <= len(res.token_ids) <= 12 and len(res.log_probs) == len(res.token_ids) and len(plain.token_ids) >= 1
    pixels = processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([prompt + res.token_ids]), pixel_values=pixels["pixel_values"],
                              image_grid_thw=pixels["image_grid_thw"]).logits[0, len(prompt) - 1:-1]
    ref = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(res.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(ref, torch.tensor(res.log_probs), atol=1e-4)
