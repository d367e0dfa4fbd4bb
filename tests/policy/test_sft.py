"""Trajectory builder, word swap and SFT trainer."""
import json
import re

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.config import ToolsConfig
from actors.registry import build_tool
from policy.config import SFTConfig
from policy.sft import examples_from_parquet, train_sft
from policy.sft_data import SyntheticNormals, TrajectoryBuilder, tokenize, write_sft_dataset
from rollout.data import MVTecAD
from rollout.format import TOOL_NAMES
from rollout.parser import Answer, ToolCall, parse_turn
from rollout.prompts import observation_text


@pytest.fixture(scope="module")
def trajectories(syn_root):
    cfg = ToolsConfig()
    cfg.knowledge.embedder = "hashing"
    builder = TrajectoryBuilder({n: build_tool(n, cfg) for n in TOOL_NAMES}, SyntheticNormals(syn_root))
    ds = MVTecAD(syn_root, ["syn_weave", "syn_washer"])
    return [t for c in ds.categories for s in ds.anomalies(c) for v in range(2) if (t := builder.build(s, v))]


@pytest.fixture(scope="module")
def sft_data(trajectories, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("sftdata")
    summary = write_sft_dataset(trajectories, AutoTokenizer.from_pretrained(tiny_models["text"]), out)
    return out / "sft.parquet", summary


def test_trajectories_parse_back_with_zero_errors(trajectories):
    assert len(trajectories) >= 40
    for t in trajectories:
        parsed = [parse_turn(x) for x in t.turns]
        assert all(p.format_ok for p in parsed), t.trajectory_id
        calls = [p.action for p in parsed[:-1]]
        assert all(isinstance(c, ToolCall) and c.name in TOOL_NAMES for c in calls)
        assert isinstance(parsed[-1].action, Answer) and parsed[-1].action.content["final_image_index"] == t.n_generations
        names = [c.name for c in calls]
        assert names[0] == "prompt_gen" and names[-1] == "mask_gen"
        assert names.count("image_gen") == t.n_generations == names.count("quality_eval")
        assert names.count("knowledge") == t.n_generations - 1  # KR after each failed attempt
        scores = [o for o in t.observations if "quality_score" in o]
        assert [s["pass"] for s in scores] == [False] * (len(scores) - 1) + [True]  # earlier attempts fail QE, the real one passes
        thinking = [parse_turn(x).thinking for x in t.turns]
        assert all(f"Image {s['image_index']} failed" in th for s, th in zip(scores[:-1], thinking[3::3]))
        assert len(t.observations) == len(t.turns) - 1


def test_every_trajectory_is_valid_under_the_turn_grammar(trajectories, tok):
    """What the policy learns is what the grammar lets it write at rollout: each turn replays
    under the grammar an episode would send at that point (images so far, words seen so far)."""
    from rollout.grammar import TurnGrammar, replay
    from rollout.prompts import task_text

    for t in trajectories:
        words, sources, images = [task_text(t.category, t.defect_type)], [], 1
        for i, turn in enumerate(t.turns):
            replay(TurnGrammar(images, tuple(words), sources=tuple(sources)), tok.encode(turn, add_special_tokens=False), tok)
            if i < len(t.observations):
                o = t.observations[i]
                words += [str(o[k]) for k in ("prompt", "text", "review") if k in o]
                sources += [str(o[k]) for k in ("prompt", "text") if k in o]  # PG's prompt, KR's passage
                images += "region" in o and "mask_area" not in o


def test_summary_counts_n_and_tool_sequences(sft_data, trajectories):
    _, summary = sft_data
    assert summary["trajectories"] == len(trajectories)
    assert sum(summary["n_generations"].values()) == len(trajectories) and set(summary["n_generations"]) <= {1, 2, 3}
    assert all(seq.startswith("prompt_gen→image_gen→quality_eval") for seq in summary["tool_sequences"])


def test_loss_mask_covers_exactly_the_policy_tokens(sft_data, trajectories, tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models["text"])
    t = trajectories[0]
    enc = tokenize(t, tok)
    policy_ids = [i for i, m in zip(enc["response_ids"], enc["response_mask"]) if m]
    assert policy_ids == [i for turn in t.turns for i in tok.encode(turn, add_special_tokens=False)]
    obs_ids = [i for i, m in zip(enc["response_ids"], enc["response_mask"]) if not m]
    assert obs_ids == [i for o in t.observations for i in tok.encode(observation_text(o), add_special_tokens=False)]
    ex = examples_from_parquet(sft_data[0])
    row = next(e for e in ex if len(e.input_ids) == len(enc["prompt_ids"]) + len(enc["response_ids"]))
    n_prompt = len(enc["prompt_ids"])
    assert all(l == -100 for l in row.labels[:n_prompt])
    for e in ex:
        assert len(e.labels) == len(e.input_ids)
        assert all(l == -100 or l == i for l, i in zip(e.labels, e.input_ids))


def test_short_sft_lowers_loss_and_changes_every_parameter(sft_data, tiny_models, tmp_path):
    cfg = SFTConfig(steps=12, batch_size=4, warmup_steps=2, save_every=100, log_every=4, lr=3e-3)
    res = train_sft(str(tiny_models["text"]), sft_data[0], tmp_path, cfg, progress=False)
    assert res.last_loss < res.first_loss - 0.5
    before = AutoModelForCausalLM.from_pretrained(tiny_models["text"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(res.checkpoint).state_dict()
    model = AutoModelForCausalLM.from_pretrained(tiny_models["text"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    unchanged = [n for n in trainable if torch.equal(before[n], after[n])]
    assert not unchanged
    assert (tmp_path / "tensorboard").is_dir() and any((tmp_path / "tensorboard").iterdir())


def test_resume_continues_from_the_saved_step(sft_data, tiny_models, tmp_path):
    cfg = SFTConfig(steps=8, batch_size=4, warmup_steps=2, save_every=4, log_every=4)
    full = train_sft(str(tiny_models["text"]), sft_data[0], tmp_path / "full", cfg, progress=False)
    part = train_sft(str(tiny_models["text"]), sft_data[0], tmp_path / "split", cfg, stop_after=3, progress=False)
    assert part.steps_run == 3 and part.checkpoint.parent.name == "step_3"
    rest = train_sft(str(tiny_models["text"]), sft_data[0], tmp_path / "split", cfg, progress=False)
    assert rest.resumed_from == 3 and rest.steps_run == 5 and rest.checkpoint.parent.name == "step_8"
    a = AutoModelForCausalLM.from_pretrained(full.checkpoint).state_dict()
    b = AutoModelForCausalLM.from_pretrained(rest.checkpoint).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert rest.last_loss == pytest.approx(full.last_loss, abs=1e-5)


@pytest.fixture(scope="module")
def swapper(tiny_models):
    from actors.knowledge_base import load_knowledge_base
    from policy.word_swap import WordSwap, vocabulary_pieces

    return WordSwap(vocabulary_pieces(AutoTokenizer.from_pretrained(tiny_models["text"])), load_knowledge_base())


def _undo(text, table):
    inverse = {v: k for k, v in table.items()}
    return re.sub(r"[A-Za-z]+", lambda m: inverse.get(m.group(0), m.group(0)), text)


def test_word_swap_replaces_content_words_everywhere_and_keeps_the_structure(trajectories, swapper):
    from policy.word_swap import protected_words

    t = next(t for t in trajectories if t.n_generations == 3)
    words = swapper.content_words(t.category, t.defect_type)
    obj = t.category.split("_")[1]
    assert obj in words and "syn" not in words
    assert not set(words) & (protected_words() - set(t.defect_type.split("_")))
    table = swapper.table(t, np.random.default_rng(0))
    assert set(table) == set(words) and len(set(table.values())) == len(words)
    s = swapper.swap(t, table)
    assert s.category == f"syn_{table[obj]}"
    text = " ".join([s.category, s.defect_type, *s.turns, json.dumps(s.observations)])
    assert not any(re.search(rf"(?<![A-Za-z]){w}(?![A-Za-z])", text) for w in words)
    # a bijection on words: undoing it gives back the trajectory exactly
    assert [_undo(x, table) for x in s.turns] == t.turns
    assert json.loads(_undo(json.dumps(s.observations), table)) == t.observations
    # structure, numbers and tool results unchanged; every turn still parses
    assert s.tools == t.tools and s.n_generations == t.n_generations
    assert all(parse_turn(x).format_ok for x in s.turns)
    for a, b in zip(s.observations, t.observations):
        assert {k: v for k, v in a.items() if not isinstance(v, str)} == {k: v for k, v in b.items() if not isinstance(v, str)}
    assert s.turns[2] == t.turns[2]  # "Check image 1." and the quality_eval call hold no content word


def test_swap_some_fraction_and_determinism(trajectories, swapper):
    from policy.word_swap import swap_some

    assert swap_some(trajectories, swapper, 0.0, 0) == list(trajectories)
    everything = swap_some(trajectories[:6], swapper, 1.0, 0)
    assert all(s.trajectory_id.endswith("-swap") and s.category != t.category for s, t in zip(everything, trajectories))
    half = swap_some(trajectories, swapper, 0.5, 3)
    assert half == swap_some(trajectories, swapper, 0.5, 3)
    assert 0.25 < sum(s.trajectory_id.endswith("-swap") for s in half) / len(half) < 0.75
    with pytest.raises(ValueError, match="word_swap_fraction"):
        swap_some(trajectories, swapper, -0.1, 0)


def test_vocabulary_pieces_are_lowercase_words_of_the_tokenizer(tiny_models):
    from policy.word_swap import vocabulary_pieces

    tok = AutoTokenizer.from_pretrained(tiny_models["text"])
    pieces = vocabulary_pieces(tok)
    assert len(pieces) > 200 and all(p.isalpha() and p.islower() for p in pieces)
    assert all(len(tok.encode(p, add_special_tokens=False)) == 1 or len(tok.encode(" " + p, add_special_tokens=False)) == 1
               for p in pieces)
