"""The user's knowledge files, derived entries for unknown pairs, and odd image files."""
import json

import numpy as np
import pytest
from PIL import Image

from actors.knowledge import KnowledgeRetriever
from actors.knowledge_derive import category_kind, derive_entry, measure_anomaly, name_only_entry
from actors.knowledge_files import (
    KnowledgeFileError,
    add_entry,
    entry_from_dict,
    knowledge_with_overrides,
    load_knowledge,
    read_entries,
)
from rollout.data.images import read_mask, read_rgb

ENTRY = {"category": "my_tile", "defect": "hairline_crack", "shape": "crack", "colour": "dark", "size": "small",
         "location": "across the glazed tile", "appearance": "a thin dark hairline crack in the glaze"}


def test_a_user_file_adds_a_pair_and_kr_finds_it_by_name(tmp_path):
    path = tmp_path / "mine.yaml"
    assert add_entry(path, entry_from_dict(ENTRY)) is False
    kb = load_knowledge([str(path)])
    e = kb.get("my_tile", "hairline_crack")
    assert (e.shape, e.colour, e.size, e.contrast, e.kind, e.source) == ("crack", "dark", "small", "medium", "object", "user")
    assert kb.source_of("bottle", "broken_large") == "shipped" and kb.source_of("my_tile", "x") == "unknown"
    kr = KnowledgeRetriever("hashing", kb=kb)  # re-indexed with what it was given
    assert kr.search("my_tile hairline crack", 1)[0] == e
    assert kr.lookup("my_tile", "hairline_crack") == e


def test_a_user_entry_wins_over_the_shipped_one_and_says_so(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{**ENTRY, "category": "bottle", "defect": "contamination", "colour": "green"}]))
    kb, overrides = knowledge_with_overrides([str(path)])
    assert kb.get("bottle", "contamination").colour == "green"
    assert [(e.category, e.defect, e.colour, p) for e, p in overrides] == [("bottle", "contamination", "brown", str(path))]
    assert len(kb) == len(load_knowledge()) and load_knowledge().get("bottle", "contamination").colour == "brown"
    # adding the same pair again replaces it in the file
    assert add_entry(path, entry_from_dict({**ENTRY, "category": "bottle", "defect": "contamination"})) is True
    assert [e.colour for e in read_entries(path)] == ["dark"]


@pytest.mark.parametrize("change, message", [
    ({"shape": "squiggle"}, "field 'shape': 'squiggle' is not one of"),
    ({"colour": "mauve"}, "field 'colour': 'mauve' is not one of"),
    ({"size": "huge"}, "field 'size': 'huge' is not one of"),
    ({"kind": "liquid"}, "field 'kind': 'liquid' is not one of"),
    ({"category": "my tile/x"}, "field 'category': 'my tile/x' is not a folder name"),
    ({"location": ""}, "field 'location' must be a non-empty string"),
    ({"size": 3}, "field 'size' must be a non-empty string, got 3"),
    ({"colour_name": "dark"}, "unknown field 'colour_name'"),
    ({"defect_type": "x"}, "give 'defect' or 'defect_type', not both"),
])
def test_a_bad_entry_is_refused_by_field(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump([ENTRY, {**ENTRY, "defect": "second", **change}]))
    with pytest.raises(KnowledgeFileError, match="entry 2") as e:
        load_knowledge([str(path)])
    assert message in str(e.value) and str(path) in str(e.value)


def test_missing_fields_and_broken_files_are_named(tmp_path):
    with pytest.raises(KnowledgeFileError, match="missing field 'appearance'"):
        entry_from_dict({k: v for k, v in ENTRY.items() if k != "appearance"})
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(KnowledgeFileError, match="broken.json: not valid JSON"):
        read_entries(broken)
    with pytest.raises(KnowledgeFileError, match="knowledge file not found"):
        load_knowledge([str(tmp_path / "absent.yaml")])
    aliased = entry_from_dict({**{k: v for k, v in ENTRY.items() if k != "defect"}, "defect_type": "d"})
    assert aliased.defect == "d"


def _line_anomaly(value=30):
    """A 64x80 gray surface (100) with a thin diagonal mark of ``value``; its mask."""
    img = np.full((64, 80, 3), 100, np.uint8)
    mask = np.zeros((64, 80), bool)
    for i in range(40):
        mask[10 + i, 20 + i] = mask[10 + i, 21 + i] = True
    img[mask] = value
    return img, mask


def test_a_line_shaped_dark_anomaly_is_measured_as_such():
    img, mask = _line_anomaly()
    m = measure_anomaly(img, mask)
    assert (m.group, m.flat) == ("line", False)
    assert m.extent == pytest.approx(41 / 64)
    assert m.centre == pytest.approx(((sum(range(20, 60)) + sum(range(21, 61))) / 80 / 80, (10 + 49) / 2 / 64))
    assert measure_anomaly(img, np.zeros_like(mask)) is None


def test_derived_entries_follow_the_masks_and_keep_the_names_word():
    img, mask = _line_anomaly()
    crack = derive_entry("my_tile", "hairline_crack", [(img, mask, None)] * 3)
    assert (crack.shape, crack.colour, crack.size, crack.source) == ("crack", "dark", "large", "derived")
    assert crack.location == "near the centre of the my_tile" and "3 real 'hairline crack' anomalies" in crack.appearance
    # a name that says nothing of the shape: the mask's group gives the plainest shape of it
    assert derive_entry("my_tile", "zorp", [(img, mask, None)]).shape == "scratch"
    # a name that says blob while the masks say line: the masks win
    assert derive_entry("my_tile", "oil_spot", [(img, mask, None)]).shape == "scratch"
    blob = np.zeros((64, 80), bool)
    blob[20:30, 30:40] = True
    flat = np.full((64, 80, 3), 100, np.uint8)
    flat[blob] = 108  # barely any colour change: a dent, not a stain
    assert derive_entry("my_gizmo", "zorp", [(flat, blob, None)]).shape == "dent"


def test_name_only_entries_use_the_words_of_the_name():
    e = name_only_entry("my_gizmo", "large_white_scratch")
    assert (e.shape, e.colour, e.size, e.source, e.location) == ("scratch", "white", "large", "name_only", "on the my_gizmo")
    assert name_only_entry("my_gizmo", "pinhole").shape == "hole"  # a compound counts by its word
    assert (name_only_entry("my_gizmo", "blackspot").colour, name_only_entry("my_gizmo", "blackspot").shape) == ("black", "spot")
    e = name_only_entry("my_gizmo", "zorp")
    assert (e.shape, e.colour, e.size, e.contrast) == ("spot", "dark", "medium", "medium")
    assert derive_entry("my_gizmo", "zorp", []) == e


def test_texture_or_object_from_a_normal(syn_root):
    assert category_kind(read_rgb(syn_root / "syn_marble" / "train" / "good" / "000.png")) == "texture"
    assert category_kind(read_rgb(syn_root / "syn_pill" / "train" / "good" / "000.png")) == "object"


def test_odd_image_files_read_as_rgb_uint8(tmp_path):
    g = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (6, 1))  # 6x25, not square
    Image.fromarray(g.astype(np.uint16) * 257).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode == "I;16"  # PIL's convert("RGB") would clip it to white
    Image.fromarray(g).save(tmp_path / "g.png")
    Image.fromarray(np.stack([g] * 3 + [np.full_like(g, 7)], axis=2), "RGBA").save(tmp_path / "a.png")
    for name in ("16.png", "g.png", "a.png"):
        rgb = read_rgb(tmp_path / name)
        assert rgb.shape == (6, 25, 3) and rgb.dtype == np.uint8
        assert (rgb == g[:, :, None]).all(), name
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    assert np.abs(read_rgb(tmp_path / "g.jpg").astype(int) - g[:, :, None]).max() <= 8
    mask16 = np.zeros((6, 25), np.uint16)
    mask16[2:4, 5:9] = 65535
    Image.fromarray(mask16).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png").sum() == 8
