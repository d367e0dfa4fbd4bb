import pytest

from cluster.cli import main
from cluster.config import DEFAULT_CONFIG, REPO_CONFIGS, AppConfig, ConfigError, load_config


def test_defaults_and_shipped_presets_load():
    cfg = load_config(DEFAULT_CONFIG)
    assert isinstance(cfg, AppConfig)
    assert cfg.tools.image_gen.backend == "procedural"
    gpu = load_config(REPO_CONFIGS / "gpu.yaml")
    assert gpu.tools.image_gen.backend == "diffusers" and gpu.policy.kind == "vl"
    assert gpu.tools.image_gen.resources.num_gpus == 0.25


def test_dotlist_overrides_win_over_yaml():
    cfg = load_config(DEFAULT_CONFIG, ["seed=7", "data.synthetic.size=64", "tools.image_gen.resources.replicas=3"])
    assert (cfg.seed, cfg.data.synthetic.size, cfg.tools.image_gen.resources.replicas) == (7, 64, 3)


@pytest.mark.parametrize("override, key", [
    ("sed=1", "sed"),
    ("data.synthetic.sizes=3", "data.synthetic.sizes"),
    ("tools.image_gen.resources.gpus=1", "tools.image_gen.resources.gpus"),
])
def test_unknown_override_key_is_named(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(DEFAULT_CONFIG, [override])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="'seed'"):
        load_config(DEFAULT_CONFIG, ["seed=abc"])
    with pytest.raises(ConfigError, match="'data.synthetic.n_train'"):
        load_config(DEFAULT_CONFIG, ["data.synthetic.n_train=1.5"])


def test_unknown_key_in_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools:\n  image_gen:\n    backnd: procedural\n")
    with pytest.raises(ConfigError, match="'tools.image_gen.backnd'") as e:
        load_config(bad)
    assert str(bad) in str(e.value)


def test_bad_choice_and_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="'tools.quality_eval.backend'.*'gpt'"):
        load_config(DEFAULT_CONFIG, ["tools.quality_eval.backend=gpt"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(DEFAULT_CONFIG, ["seed"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_config_error_exits_2_before_work(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["make-data", "--out", str(out), "bogus.key=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert not out.exists()


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("make-data", "tiny-models", "split", "demo"):
        assert cmd in text


@pytest.mark.parametrize("override, message", [
    ("rl.steps=-1", "'rl.steps': -1 is out of range: a count or size, must be >= 1"),
    ("data.synthetic.size=0", "'data.synthetic.size': 0 is out of range: a count or size, must be >= 1"),
    ("sft.word_swap_fraction=1.5", "'sft.word_swap_fraction': 1.5 is out of range: a fraction, must be in [0, 1]"),
    ("episode.top_p=0", "'episode.top_p': 0.0 is out of range: a fraction, must be in (0, 1]"),
    ("episode.temperature=-0.1", "'episode.temperature': -0.1 is out of range: a temperature, must be >= 0"),
    ("serve.port=70000", "'serve.port': 70000 is out of range: a port, must be in [1, 65535]"),
    ("serve.port=0", "'serve.port': 0 is out of range: a port, must be in [1, 65535]"),
    ("learner.lr=0", "'learner.lr': 0.0 is out of range: a positive number, must be > 0"),
    ("reward.beta=-1", "'reward.beta': -1.0 is out of range: a non-negative number, must be >= 0"),
    ("tools.quality_eval.pass_score=6", "'tools.quality_eval.pass_score': 6.0 is out of range: a score on 0-5, must be in [0, 5]"),
    ("ray.num_cpus=-2", "'ray.num_cpus': -2 is out of range: a resource amount, must be >= 0"),
    ("demo.bench_epochs=0", "'demo.bench_epochs': 0 is out of range: a count or size, must be >= 1"),
])
def test_numeric_values_out_of_range_are_refused_by_name(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(DEFAULT_CONFIG, [override])
    assert str(e.value) == "bad config key " + message


def test_range_edges_are_accepted_and_every_numeric_key_has_a_range():
    from cluster.config import _RANGES, numeric_fields, range_of

    cfg = load_config(DEFAULT_CONFIG, ["rl.steps=1", "sft.word_swap_fraction=0", "sft.word_swap_fraction=1",
                                       "episode.temperature=0", "serve.port=65535", "sft.warmup_steps=0",
                                       "policy.engine.prefix_cache_tokens=0", "demo.bench_epochs=null"])
    assert cfg.serve.port == 65535 and cfg.sft.warmup_steps == 0 and cfg.demo.bench_epochs is None
    keys = [k for k, _ in numeric_fields(AppConfig())]
    assert len(keys) > 100 and all(range_of(k) for k in keys)
    used = {range_of(k)[0] for k in keys}
    assert [r[0] for r in _RANGES if r[0] not in used] == []  # no rule names a key that is gone


def test_cli_refuses_a_negative_step_count_before_work(capsys):
    assert main(["train", "rl.steps=-1"]) == 2
    assert "'rl.steps': -1 is out of range" in capsys.readouterr().err


def test_a_policy_kind_that_does_not_match_the_checkpoint_stops_before_work(tiny_models, tmp_path, capsys):
    from cluster.cli import main

    for kind, path, found in (("vl", tiny_models["text"], "text"), ("text", tiny_models["vl"], "vl")):
        rc = main(["train", "--out", str(tmp_path / kind), f"policy.kind={kind}", f"policy.path={path}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"policy.kind={kind} but {path} is a {found} model" in err[0], err
        assert not (tmp_path / kind).exists()
