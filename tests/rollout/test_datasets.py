import filecmp
import shutil

import numpy as np
import pytest
from PIL import Image

from cluster.cli import main
from rollout.config import SyntheticDataConfig
from rollout.data import DatasetError, MVTecAD, MVTecLOCO, VisA, open_dataset
from rollout.data.splits import dataset_split, split_category, write_split_lists
from rollout.data.synthetic import make_dataset, roles
from tests.trees import make_loco, make_visa

SMALL = SyntheticDataConfig(size=64)


def _tree_files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_make_data_is_deterministic_and_seed_dependent(tmp_path):
    a = make_dataset(tmp_path / "a", seed=5, cfg=SMALL)
    b = make_dataset(tmp_path / "b", seed=5, cfg=SMALL)
    c = make_dataset(tmp_path / "c", seed=6, cfg=SMALL)
    files = _tree_files(a)
    assert files == _tree_files(b) and len(files) > 100
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    assert not all(filecmp.cmp(a / f, c / f, shallow=False) for f in files if f.suffix == ".png")


def test_make_data_cli_same_seed_same_bytes(tmp_path):
    for name in ("x", "y"):
        assert main(["make-data", "--out", str(tmp_path / name), "--seed", "3", "data.synthetic.size=64"]) == 0
    files = _tree_files(tmp_path / "x")
    assert all(filecmp.cmp(tmp_path / "x" / f, tmp_path / "y" / f, shallow=False) for f in files)


def test_synthetic_layout_roles_and_masks(syn_root):
    ds = MVTecAD(syn_root)
    assert ds.categories == ["syn_marble", "syn_pill", "syn_washer", "syn_weave"]
    assert roles(syn_root) == {"syn_weave": "source", "syn_washer": "source", "syn_marble": "target", "syn_pill": "target"}
    for cat in ds.categories:
        assert len(ds.train(cat)) == SMALL.n_train
        test = ds.test(cat)
        assert len(ds.defect_types(cat)) == 3
        assert len(test) == SMALL.n_test_good + 3 * SMALL.n_test_per_defect
        for s in test:
            if s.is_anomaly:
                assert s.masks[0].name == f"{s.image.stem}_mask.png"
                mask = np.array(Image.open(s.masks[0]))
                assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
                edited = np.array(Image.open(s.image)).astype(int)
                assert edited.shape == (64, 64, 3)


def test_split_counts_and_written_lists(syn_root, tmp_path):
    ds = MVTecAD(syn_root, ["syn_pill"])
    split = dataset_split(ds, "syn_pill")
    for d, s in split.defects.items():
        assert len(s.centres) == SMALL.n_test_per_defect // 3
        assert len(s.centres) + len(s.test) == SMALL.n_test_per_defect
        assert [p.image.name for p in s.centres] == [f"{i:03d}.png" for i in range(len(s.centres))]
    assert len(split.test_samples()) == SMALL.n_test_good + 3 * (SMALL.n_test_per_defect - SMALL.n_test_per_defect // 3)
    base = write_split_lists(split, tmp_path)
    lines = (base / "crack" / "centres.txt").read_text().splitlines()
    assert lines == [str(s.image) for s in split.defects["crack"].centres]
    assert len((base / "test_good.txt").read_text().splitlines()) == SMALL.n_test_good


def test_split_sorts_by_number_not_name(tmp_path):
    from rollout.data.types import Sample

    samples = [Sample(tmp_path / f"{i}.png", "c", "d", "test", (tmp_path / "m.png",)) for i in (10, 2, 1, 7, 3, 11, 0)]
    split = split_category("c", samples)
    assert [s.image.name for s in split.defects["d"].centres] == ["0.png", "1.png"]  # 7 // 3 = 2


def test_mvtec_errors_name_the_problem(syn_root, tmp_path):
    with pytest.raises(DatasetError, match="root not found"):
        MVTecAD(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="does not look like an MVTec AD root"):
        MVTecAD(tmp_path / "empty")
    with pytest.raises(DatasetError, match="unknown category 'bottle'.*syn_pill"):
        MVTecAD(syn_root, ["bottle"])
    bad = tmp_path / "bad"
    shutil.copytree(syn_root / "syn_pill", bad / "syn_pill")
    (bad / "syn_pill" / "ground_truth" / "crack" / "002_mask.png").unlink()
    with pytest.raises(DatasetError, match="missing mask.*002_mask.png"):
        MVTecAD(bad)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(bad / "syn_pill" / "ground_truth" / "crack" / "002_mask.png")
    with pytest.raises(DatasetError, match="is 12x10 but image .* is 64x64"):
        MVTecAD(bad)


def test_visa_standard_split_and_type_table(tmp_path):
    root = make_visa(tmp_path / "visa")
    ds = VisA(root)
    assert ds.categories == ["candle"]
    assert len(ds.train("candle")) == 2 and len(ds.test("candle")) == 2 + 6
    assert ds.defect_types("candle") == ["anomaly"]  # no type table: VisA has no types
    typed = open_dataset("visa", root, ["candle"], type_table=str(root / "candle" / "image_anno.csv"))
    assert typed.defect_types("candle") == ["chip", "combined", "scratch"]
    split = dataset_split(typed, "candle")
    assert {d: (len(s.centres), len(s.test)) for d, s in split.defects.items()} == {
        "chip": (1, 2), "combined": (0, 1), "scratch": (0, 2)}
    with pytest.raises(DatasetError, match="unknown category 'pcb9'"):
        VisA(root, ["pcb9"])
    with pytest.raises(DatasetError, match="split_csv"):
        VisA(tmp_path)
    table = tmp_path / "partial.csv"
    table.write_text("image,defect\ncandle/Data/Images/Anomaly/000.JPG,chip\n")
    with pytest.raises(DatasetError, match="no entry for anomaly image"):
        VisA(root, type_table=table)


def test_loco_several_masks_per_image(tmp_path):
    root = make_loco(tmp_path / "loco")
    ds = MVTecLOCO(root)
    assert ds.defect_types("juice_bottle") == ["logical_anomalies", "structural_anomalies"]
    masks = {s.defect: len(s.masks) for s in ds.test("juice_bottle") if s.is_anomaly}
    assert masks == {"logical_anomalies": 2, "structural_anomalies": 1}
    assert len(ds.validation("juice_bottle")) == 3
    shutil.rmtree(root / "juice_bottle" / "ground_truth" / "structural_anomalies" / "001")
    with pytest.raises(DatasetError, match="missing mask for anomaly image .*001.png"):
        MVTecLOCO(root)


def test_split_cli_writes_lists(syn_root, tmp_path):
    assert main(["split", "--out", str(tmp_path), "--data", str(syn_root), "--categories", "syn_weave"]) == 0
    assert (tmp_path / "syn_weave" / "hole" / "centres.txt").is_file()
    assert main(["split", "--out", str(tmp_path), "--data", str(tmp_path / "nope")]) == 2
