"""The slice of a preset that code below cluster/ reads (verl's agent-loop workers)."""
import pytest

from actors.config import ToolsConfig
from rollout.config import DEFAULT_PRESET, EpisodeConfig, load_sections


def test_sections_of_the_default_preset_with_overrides():
    out = load_sections(DEFAULT_PRESET, ["episode.max_turns=5", "tools.knowledge.embedder=hashing"],
                        {"tools": ToolsConfig, "episode": EpisodeConfig})
    assert isinstance(out["tools"], ToolsConfig) and out["tools"].knowledge.embedder == "hashing"
    assert out["episode"].max_turns == 5 and out["episode"].grammar is True


def test_an_unknown_key_is_named_and_a_missing_file_refused(tmp_path):
    with pytest.raises(ValueError, match=r"bad config key 'episode\.max_turnz'"):
        load_sections(DEFAULT_PRESET, ["episode.max_turnz=5"], {"episode": EpisodeConfig})
    with pytest.raises(ValueError, match="config file not found"):
        load_sections(tmp_path / "nope.yaml", [], {"episode": EpisodeConfig})
