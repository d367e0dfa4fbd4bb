"""Benchmark metrics against independent computations: scikit-learn, and brute force."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from benchmarks.metrics import au_pro, auroc, average_precision, connected_regions, f1_max


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_ap_f1_match_scikit_learn(seed, ties):
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.3
    scores = labels * 0.8 + rng.normal(size=500)
    if ties:
        scores = np.round(scores, 1)
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    p, r, _ = precision_recall_curve(labels, scores)
    f1 = np.max(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0))
    assert f1_max(labels, scores) == pytest.approx(f1, abs=1e-12)


def test_known_values():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert auroc([0, 1], [0.2, 0.9]) == 1.0 and average_precision([0, 1], [0.2, 0.9]) == 1.0
    assert f1_max([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.8)  # 2 TP, 1 FP at 0.7
    with pytest.raises(ValueError, match="both"):
        auroc([1, 1], [0.1, 0.2])


def brute_force_pro(masks, maps, limit):
    """Per-threshold loop over every distinct score: the textbook definition."""
    regions = connected_regions(masks)
    maps = np.stack(maps).astype(float)
    ids = range(1, regions.max() + 1)
    normal = regions == 0
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel()), reverse=True):
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = np.mean([(pred & (regions == r)).sum() / (regions == r).sum() for r in ids])
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    grid = np.linspace(0, limit, 30001)
    return np.trapezoid(np.interp(grid, fpr, pro), grid) / limit


def test_au_pro_on_hand_made_masks():
    m1 = np.zeros((8, 8), np.uint8)
    m1[1:3, 1:3] = 1  # region of 4 pixels
    m1[5:8, 5:8] = 1  # region of 9 pixels
    m2 = np.zeros((8, 8), np.uint8)
    m2[0:2, 4:8] = 1  # region of 8 pixels in the second image
    assert connected_regions([m1, m2]).max() == 3
    perfect = [m1.astype(float), m2.astype(float)]
    assert au_pro([m1, m2], perfect) == pytest.approx(1.0)
    # a map that finds region 1 fully, half of region 2, none of region 3 before any false positive
    a = np.zeros((8, 8))
    a[1:3, 1:3] = 0.9
    a[5:8, 5:8] = np.where(np.arange(9).reshape(3, 3) < 5, 0.8, 0.0)
    b = np.zeros((8, 8))
    rng = np.random.default_rng(0)
    maps = [a + rng.random((8, 8)) * 0.01, b + rng.random((8, 8)) * 0.01]
    for limit in (0.3, 1.0):
        assert au_pro([m1, m2], maps, limit) == pytest.approx(brute_force_pro([m1, m2], maps, limit), abs=1e-4)


def test_image_labels_come_from_the_folder_not_the_resized_mask():
    """A 2 px defect whose mask vanished when resized to 256 px is still an anomalous image."""
    from benchmarks.detect import evaluate

    size = 32
    empty = np.zeros((size, size), np.uint8)
    tiny_gone, big = empty.copy(), empty.copy()
    big[8:20, 8:20] = 1
    maps = np.zeros((3, size, size), np.float32)
    maps[0, 2:4, 2:4] = 0.9  # the vanished defect still scores highest
    maps[1, 8:20, 8:20] = 0.5
    res = evaluate(maps, [tiny_gone, big, empty], anomalous=[True, True, False])
    assert res["image_auroc"] == 1.0 and res["image_ap"] == 1.0
    with pytest.raises(ValueError, match="2 image labels for 3 masks"):
        evaluate(maps, [tiny_gone, big, empty], anomalous=[True, False])


def test_test_selection_uses_the_published_sum():
    from benchmarks.detect import TEST_SELECTION

    assert TEST_SELECTION == ("image_auroc", "pixel_auroc", "pixel_ap", "au_pro")


def test_headline_ic_lpips_counts_small_clusters_as_zero():
    from benchmarks.mvtec_report import flat_row

    det = dict.fromkeys(("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro"), 0.5)
    row = flat_row({"category": "c", "is": 1.0, "ic_lpips_zero": 0.2, "ic_lpips_dropped": 0.3, "detection": det,
                    "classification": {"accuracy": 0.5, "single_type": False}})
    assert row["ic_lpips"] == 0.2 and row["ic_lpips_dropped"] == 0.3


def test_the_training_cap_keeps_the_first_files_of_each_type():
    from benchmarks.config import MVTecBenchConfig
    from benchmarks.data import GeneratedSet

    imgs = {d: [np.full((2, 2, 3), k, np.uint8) for k in range(n)] for d, n in (("a", 3), ("b", 1))}
    gen = GeneratedSet("c", imgs, {d: [v[0][..., 0] for _ in v] for d, v in imgs.items()})
    capped = gen.first(2)
    assert [im[0, 0, 0] for im in capped.images["a"]] == [0, 1] and len(capped.images["b"]) == 1
    assert len(capped.masks["a"]) == 2 and len(gen.images["a"]) == 3
    assert MVTecBenchConfig().max_generated_per_type == 500


def test_classifier_validation_split_is_per_type_and_never_takes_a_whole_type():
    from benchmarks.classify import validation_split

    labels = [0] * 10 + [1] * 5 + [2] * 1
    val = validation_split(labels, 0.2, seed=0)
    assert val[:10].sum() == 2 and val[10:15].sum() == 1 and val[15:].sum() == 0
    assert (validation_split(labels, 0.2, seed=0) == val).all() and validation_split(labels, 0.0, 0).sum() == 0


def test_classifier_keeps_the_epoch_with_the_best_validation_accuracy(monkeypatch):
    """Validation accuracy scripted per epoch: the model returned is the one of epoch 2."""
    import torch

    import benchmarks.classify as classify

    tiny = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    monkeypatch.setattr(classify, "resnet34", lambda n, w: (tiny, "test net"))
    scripted = iter([0.5, 1.0, 0.5])
    states = []

    def fake_accuracy(model, images, labels, batch_size=32, normalize=False):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(classify, "accuracy", fake_accuracy)
    images = [np.full((4, 4, 3), 40 * k, np.uint8) for k in range(6)]
    model, init, info = classify.train_classifier(images, [0, 0, 0, 1, 1, 1], 2, epochs=3, lr=0.1, batch_size=2,
                                                  weights=None, seed=0, val_fraction=0.34)
    assert info == {"selected_epoch": 2, "val_accuracy": 1.0, "n_val": 2} and init == "test net"
    assert all(torch.equal(v, states[1][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, states[2][k]) for k, v in states[1].items())


def test_reference_classifier_recipe_repeats_the_data_and_steps_the_lr(monkeypatch):
    import torch

    import benchmarks.classify as classify

    seen = {"batches": 0, "lrs": []}
    tiny = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    real_forward = tiny.forward

    def counting_forward(x):
        if tiny.training:
            seen["batches"] += 1
            assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0  # no mean/std normalization
        return real_forward(x)

    tiny.forward = counting_forward
    monkeypatch.setattr(classify, "resnet34", lambda n, w: (tiny, "test net"))
    real_sched = torch.optim.lr_scheduler.MultiStepLR

    def recording_sched(opt, milestones, gamma):
        seen["milestones"], seen["gamma"], seen["opt"] = list(milestones), gamma, opt
        return real_sched(opt, milestones, gamma)

    monkeypatch.setattr(torch.optim.lr_scheduler, "MultiStepLR", recording_sched)
    images = [np.full((4, 4, 3), 40 * k, np.uint8) for k in range(6)]
    classify.train_classifier(images, [0, 0, 0, 1, 1, 1], 2, epochs=10, lr=0.1, batch_size=2,
                              weights=None, seed=0, val_fraction=0.34, recipe="reference")
    assert seen["batches"] == 10 * (4 * 5 // 2)  # 4 training images, repeated 5 times, batches of 2
    assert seen["milestones"] == [8, 9] and seen["gamma"] == 0.2 and type(seen["opt"]) is torch.optim.Adam
    assert seen["opt"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.2 * 0.2)
    with pytest.raises(ValueError, match="unknown classifier recipe"):
        classify.train_classifier(images, [0] * 3 + [1] * 3, 2, 1, 0.1, 2, None, 0, recipe="paper")


def test_binned_au_pro_equals_a_hand_computation():
    from benchmarks.metrics import au_pro_binned

    mask = np.zeros((2, 4), np.uint8)
    mask[0, :2] = 1  # one region of two pixels, six normal pixels
    amap = np.array([[0.9, 0.6, 0.0, 0.1], [0.3, 0.55, 0.8, 1.0]])
    # thresholds 0, .25, .5, .75: (FPR, PRO) = (5/6, 1), (4/6, 1), (3/6, 1), (2/6, 1/2); FPR < .6 keeps the
    # last two, FPR / .5 -> (1, 1) and (2/3, 1/2): trapezoid (1 - 2/3) * (1 + 1/2) / 2 = 1/4
    assert au_pro_binned([mask], [amap], limit=0.6, num_th=4) == pytest.approx(0.25, abs=1e-12)


def test_binned_pixel_f1_uses_21_thresholds_on_0_1():
    from benchmarks.metrics import f1_max_binned

    assert f1_max_binned([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.8)  # at 0.7, as exact
    # exact: 1.0 at 0.93; the grid has 0.90 (both positive: P 1/2, R 1) and 0.95 (none)
    assert f1_max([1, 0], [0.93, 0.91]) == 1.0 and f1_max_binned([1, 0], [0.93, 0.91]) == pytest.approx(2 / 3)


def test_reference_ground_truth_is_the_fully_on_bilinear_mask(tmp_path):
    from PIL import Image

    from benchmarks.data import real_test
    from rollout.data.splits import CategorySplit, DefectSplit
    from rollout.data.types import Sample

    m = np.zeros((64, 64), np.uint8)
    m[10:30, 20:44] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a.png")
    s = Sample(tmp_path / "a.png", "c", "crack", "test", (tmp_path / "m.png",))
    split = CategorySplit("c", {"crack": DefectSplit("c", "crack", [], [s])}, [])
    _, pix, reg, labels = real_test(split, 48, "reference")
    _, near, near_reg, _ = real_test(split, 48, "nearest")
    assert labels == ["crack"] and (near[0] == near_reg[0]).all()
    # a blurred edge: pixels only where fully on, regions wherever above 0, NEAREST in between
    assert pix[0].sum() < near[0].sum() < reg[0].sum()
    assert (pix[0] <= near[0]).all() and (near[0] <= reg[0]).all()
    _, same, same_reg, _ = real_test(split, 64, "reference")  # no resize: all three agree with the file
    assert (same[0] == (m > 0)).all() and (same_reg[0] == (m > 0)).all()


def test_the_reference_detector_has_five_poolings_and_two_outputs():
    import torch

    from benchmarks.draem_net import POOLINGS, DiscriminativeNet

    net = DiscriminativeNet(base=4)
    sides = []  # the input side of each encoder block: halved by each pooling
    for block in net.encoder:
        block.register_forward_pre_hook(lambda m, inp: sides.append(inp[0].shape[-1]))
    out = net(torch.zeros(2, 3, 64, 64))
    assert POOLINGS == 5 and sides == [64, 32, 16, 8, 4, 2] and out.shape == (2, 2, 64, 64)
    widths = [b[0].out_channels for b in net.encoder]
    assert widths == [4, 8, 16, 32, 32, 32] and [b[0].out_channels for b in net.blocks] == [32, 16, 8, 4, 4]
    assert net.head.kernel_size == (3, 3) and all(isinstance(u[0], torch.nn.Upsample) for u in net.ups)
    w = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.mean())) < 2e-3 and float(w.std()) == pytest.approx(0.02, rel=0.05)  # N(0, 0.02)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 48, 48))


def test_focal_loss_with_label_smoothing_equals_a_hand_computation():
    import torch

    from benchmarks.draem_net import focal_loss

    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]]])  # N=1, C=2, H=1, W=2
    target = torch.tensor([[[1, 0]]])
    s = 1e-5
    p1 = torch.softmax(torch.tensor([0.0, 1.0]), 0)  # pixel 0, class 1
    p2 = torch.softmax(torch.tensor([2.0, 0.0]), 0)  # pixel 1, class 0
    pt = [float(s * p1[0] + (1 - s) * p1[1] + s), float((1 - s) * p2[0] + s * p2[1] + s)]
    want = np.mean([-(1 - p) ** 2 * np.log(p) for p in pt])
    assert float(focal_loss(logits, target)) == pytest.approx(want, rel=1e-6)
