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
