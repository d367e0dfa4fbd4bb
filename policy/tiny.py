"""Tiny models built offline: a Qwen2 causal LM and a Qwen2.5-VL, each with a byte-level
BPE tokenizer trained here with ``tokenizers``, a chat template and the episode's tags as
special tokens. Saved with ``save_pretrained`` so they load through the very same
``from_pretrained(path)`` code as a real checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from actors.knowledge_base import load_knowledge_base
from policy.config import TinyModelConfig
from rollout.format import CHAT_TEMPLATE, CHAT_TOKENS, EOS, EPISODE_TAGS, IM_END, IMAGE_PAD, TOOL_NAMES, VIDEO_PAD, VISION_END, VISION_START

SPECIAL_TOKENS: List[str] = list(CHAT_TOKENS) + list(EPISODE_TAGS)
TEXT_DIR, VL_DIR = "tiny-qwen2", "tiny-qwen2_5-vl"


def default_corpus() -> List[str]:
    """Text the tokenizer is fitted on: knowledge passages and the episode format itself
    (system prompt, tasks, tool calls, observations), repeated so that BPE merges its
    recurring pieces into single tokens and episodes stay short."""
    from actors.defect_words import prompt_for
    from rollout.prompts import SYSTEM_PROMPT, observation_text, task_text

    kb = load_knowledge_base()
    lines = [e.text() for e in kb.entries] + [prompt_for(e) for e in kb.entries] + [prompt_for(e, True) for e in kb.entries]
    lines += [task_text(e.category, e.defect) for e in kb.entries]
    for e in kb.entries[::2]:
        lines.append(json.dumps({"name": "image_gen", "arguments": {"prompt": prompt_for(e), "region": [0.12, 0.3, 0.44, 0.62]}}))
        lines.append(observation_text({"image_index": 1, "location_score": 4.5, "quality_score": 3.25, "pass": False,
                                       "review": f"Use a {e.colour} colour for the {e.defect.replace('_', ' ')}."}))
        lines.append(observation_text({"image_index": 2, "location_score": 5.0, "quality_score": 4.75, "pass": True,
                                       "review": "Realistic and well placed; keep this defect."}))
    for k in range(1, 6):
        lines.append(observation_text({"image_index": k, "region": [0.125, 0.5, 0.375, 0.75]}))
        lines.append(observation_text({"image_index": k, "mask_area": 0.0123}))
        lines += [json.dumps({"name": t, "arguments": {"image_index": k}}) for t in ("quality_eval", "mask_gen")]
        lines.append(f'<answer>{{"status": "success", "final_image_index": {k}}}</answer>')
    lines += [json.dumps({"name": t, "arguments": {}}) for t in TOOL_NAMES]
    lines += [SYSTEM_PROMPT] * 20
    lines += [" ".join(f"{i / 1000:.3f}" for i in range(0, 1000, 7)), " ".join(str(i) for i in range(256))]
    return lines


def corpus_digest() -> str:
    import hashlib

    return hashlib.sha1("\n".join(default_corpus()).encode()).hexdigest()[:8]


def train_tokenizer(corpus: Optional[Iterable[str]] = None, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(corpus or default_corpus()), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=EOS, bos_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (IM_END, EOS)],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _text_config_kwargs(tok: PreTrainedTokenizerFast, cfg: TinyModelConfig) -> dict:
    return dict(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions, eos_token_id=tok.convert_tokens_to_ids(IM_END),
        pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=True,
    )


def build_tiny_text(out: str | Path, cfg: Optional[TinyModelConfig] = None,
                    tok: Optional[PreTrainedTokenizerFast] = None) -> Path:
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    cfg = cfg or TinyModelConfig()
    torch.manual_seed(cfg.seed)
    tok = tok or train_tokenizer(vocab_size=cfg.vocab_size)
    model = Qwen2ForCausalLM(Qwen2Config(**_text_config_kwargs(tok, cfg)))
    model.generation_config = GenerationConfig(eos_token_id=model.config.eos_token_id, pad_token_id=tok.pad_token_id)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_vl(out: str | Path, cfg: Optional[TinyModelConfig] = None,
                  tok: Optional[PreTrainedTokenizerFast] = None) -> Path:
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    cfg = cfg or TinyModelConfig()
    torch.manual_seed(cfg.seed)
    tok = tok or train_tokenizer(vocab_size=cfg.vocab_size)
    ids = {t: tok.convert_tokens_to_ids(t) for t in (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END)}
    text = _text_config_kwargs(tok, cfg)
    text.pop("tie_word_embeddings")
    # rope_scaling sections must add up to head_dim / 2
    head_dim = cfg.hidden_size // cfg.num_heads
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 2 - head_dim // 4 - head_dim // 8]}
    vision = dict(depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size, intermediate_size=2 * cfg.vision_hidden_size,
                  num_heads=2, out_hidden_size=cfg.hidden_size, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, fullatt_block_indexes=[0])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids[IMAGE_PAD],
                              video_token_id=ids[VIDEO_PAD], vision_start_token_id=ids[VISION_START],
                              vision_end_token_id=ids[VISION_END], tie_word_embeddings=True)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=text["eos_token_id"], pad_token_id=tok.pad_token_id)
    # small images keep the tiny model fast: at most 16x16 patches of 14 px
    image_proc = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=224 * 224)
    processor = Qwen2_5_VLProcessor(image_processor=image_proc, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                                    chat_template=CHAT_TEMPLATE)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_models(out: str | Path, cfg: Optional[TinyModelConfig] = None) -> dict:
    """Both tiny models under ``out``; returns {'text': path, 'vl': path}."""
    out, cfg = Path(out), cfg or TinyModelConfig()
    tok = train_tokenizer(vocab_size=cfg.vocab_size)
    return {"text": build_tiny_text(out / TEXT_DIR, cfg, tok), "vl": build_tiny_vl(out / VL_DIR, cfg, tok)}
