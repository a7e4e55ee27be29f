"""SemSegEvaluator / compute_sem_seg_metrics against hand-computed and brute-force values."""

from __future__ import annotations

import math
import pickle
import time

import numpy as np
import pytest
import torch

from ovdense.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    compute_sem_seg_metrics,
)
from ovdense.evaluation import sem_seg as sem_seg_module

IGNORE = 255
K = 6
ABSENT = 4  # in neither ground truth nor predictions
PRED_ONLY = 5  # only in predictions


def make_pairs(seed: int = 0, sizes=((10, 13), (7, 9), (12, 5), (1, 1), (13, 10), (4, 4))):
    """Random (pred, gt) label maps; class ABSENT nowhere, class PRED_ONLY only predicted, about
    15% of the GT pixels ignored."""
    rng = np.random.default_rng(seed)
    pairs = []
    for h, w in sizes:
        gt = rng.choice([0, 1, 2, 3], size=(h, w)).astype(np.int64)
        gt[rng.random((h, w)) < 0.15] = IGNORE
        # Predictions agree with GT half of the time, to make IoUs non-trivial.
        pred = rng.choice([0, 1, 2, 3, PRED_ONLY], size=(h, w)).astype(np.int64)
        agree = (rng.random((h, w)) < 0.5) & (gt != IGNORE)
        pred[agree] = gt[agree]
        pairs.append((pred, gt))
    return pairs


def brute_force(pairs, num_classes: int, ignore: int = IGNORE) -> dict:
    """Per-class pixel loops counting TP / FP / FN directly (independent of the confusion)."""
    tp = [0] * num_classes
    fp = [0] * num_classes
    fn = [0] * num_classes
    n_gt = [0] * num_classes
    correct = 0
    total = 0
    for pred, gt in pairs:
        h, w = gt.shape
        for y in range(h):
            for x in range(w):
                g = int(gt[y, x])
                p = int(pred[y, x])
                if g == ignore:
                    continue
                total += 1
                correct += g == p
        for c in range(num_classes):
            for y in range(h):
                for x in range(w):
                    g = int(gt[y, x])
                    p = int(pred[y, x])
                    if g == ignore:
                        continue
                    if g == c and p == c:
                        tp[c] += 1
                    elif g != c and p == c:
                        fp[c] += 1
                    elif g == c and p != c:
                        fn[c] += 1
                    if g == c:
                        n_gt[c] += 1
    iou = []
    acc = []
    for c in range(num_classes):
        union = tp[c] + fp[c] + fn[c]
        iou.append(100 * tp[c] / union if union else math.nan)
        acc.append(100 * tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else math.nan)
    valid_iou = [v for v in iou if not math.isnan(v)]
    valid_acc = [v for v in acc if not math.isnan(v)]
    fw = sum(n_gt[c] / total * iou[c] for c in range(num_classes) if n_gt[c])
    return {
        "mIoU": sum(valid_iou) / len(valid_iou),
        "mAcc": sum(valid_acc) / len(valid_acc),
        "fwIoU": fw,
        "pAcc": 100 * correct / total,
        "IoU": iou,
        "Acc": acc,
        "num_pixels": total,
        "num_classes_present": sum(1 for c in range(num_classes) if n_gt[c]),
    }


def same(a, b) -> bool:
    """Exact equality of nested results, NaN equal to NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_close(value: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def check_against_brute_force(metrics: dict, pairs, num_classes: int) -> None:
    expected = brute_force(pairs, num_classes)
    for key in ("mIoU", "mAcc", "fwIoU", "pAcc"):
        assert isinstance(metrics[key], float)
        assert_close(metrics[key], expected[key])
    names = [f"class_{c}" for c in range(num_classes)]
    assert list(metrics["IoU"]) == names
    assert list(metrics["Acc"]) == names
    for c, name in enumerate(names):
        assert_close(metrics["IoU"][name], expected["IoU"][c])
        assert_close(metrics["Acc"][name], expected["Acc"][c])
    assert metrics["num_pixels"] == expected["num_pixels"]
    assert metrics["num_classes_present"] == expected["num_classes_present"]


def evaluate_pairs(pairs, num_classes: int = K, **kwargs) -> dict:
    evaluator = SemSegEvaluator(num_classes, **kwargs)
    for pred, gt in pairs:
        evaluator.process(pred, gt)
    return evaluator.evaluate()


# --- values -----------------------------------------------------------------------------------


def test_random_maps_match_brute_force():
    pairs = make_pairs()
    metrics = evaluate_pairs(pairs)["sem_seg"]
    check_against_brute_force(metrics, pairs, K)
    # The designed special classes behave as specified.
    assert math.isnan(metrics["IoU"][f"class_{ABSENT}"])
    assert math.isnan(metrics["Acc"][f"class_{ABSENT}"])
    assert metrics["IoU"][f"class_{PRED_ONLY}"] == 0.0
    assert math.isnan(metrics["Acc"][f"class_{PRED_ONLY}"])
    assert metrics["num_classes_present"] == 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_more_seeds_match_brute_force(seed):
    pairs = make_pairs(seed, sizes=((9, 11), (3, 17), (10, 13)))
    check_against_brute_force(evaluate_pairs(pairs)["sem_seg"], pairs, K)


def test_sparse_path_for_many_classes_matches_dense(monkeypatch):
    # 400 classes -> 160000 cells for ~130 pixels: the np.unique path is taken.
    rng = np.random.default_rng(7)
    k = 400
    pairs = []
    for h, w in ((10, 13), (6, 7)):
        gt = rng.integers(0, k, size=(h, w))
        gt[rng.random((h, w)) < 0.2] = IGNORE
        pred = np.where(rng.random((h, w)) < 0.5, gt, rng.integers(0, k, size=(h, w)))
        pred[pred == IGNORE] = 0
        pairs.append((pred, gt))
    sparse = SemSegEvaluator(k, ignore_label=1000)
    pairs = [(p, np.where(g == IGNORE, 1000, g)) for p, g in pairs]
    for pred, gt in pairs:
        sparse.process(pred, gt)
    monkeypatch.setattr(sem_seg_module, "_SPARSE_MIN_CELLS", 10**12)
    dense = SemSegEvaluator(k, ignore_label=1000)
    for pred, gt in pairs:
        dense.process(pred, gt)
    np.testing.assert_array_equal(sparse.confusion_matrix, dense.confusion_matrix)
    # Independent count of the confusion cells.
    expected = np.zeros((k, k), dtype=np.int64)
    for pred, gt in pairs:
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
            if g != 1000:
                expected[g, p] += 1
    np.testing.assert_array_equal(sparse.confusion_matrix, expected)


def test_hand_computed_tiny_example():
    gt = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 2]])
    evaluator = SemSegEvaluator(3, class_names=["sky", "road", "car"])
    evaluator.process(pred, gt)
    # Valid (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (1,2); the 255 pixel is skipped.
    np.testing.assert_array_equal(evaluator.confusion_matrix, [[1, 1, 0], [0, 2, 1], [0, 0, 0]])
    m = evaluator.evaluate()["sem_seg"]
    # TP = [1, 2, 0], GT = [2, 3, 0], pred = [1, 3, 1], union = [2, 4, 1].
    assert m["IoU"] == {"sky": 50.0, "road": 50.0, "car": 0.0}
    assert m["Acc"]["sky"] == 50.0
    assert m["Acc"]["road"] == pytest.approx(200 / 3, rel=1e-14)
    assert math.isnan(m["Acc"]["car"])
    assert m["mIoU"] == pytest.approx(100 / 3, rel=1e-14)
    assert m["mAcc"] == pytest.approx((50 + 200 / 3) / 2, rel=1e-14)
    assert m["fwIoU"] == pytest.approx(2 / 5 * 50 + 3 / 5 * 50, rel=1e-14)
    assert m["pAcc"] == pytest.approx(60.0, rel=1e-14)
    assert m["num_pixels"] == 5 and isinstance(m["num_pixels"], int)
    assert m["num_classes_present"] == 2


def test_compute_metrics_class_absent_everywhere_is_nan_and_excluded():
    confusion = np.array(
        [
            [3, 1, 0, 0],
            [0, 4, 0, 0],
            [0, 0, 0, 0],  # class 2: no GT, never predicted -> IoU NaN, Acc NaN
            [2, 0, 0, 0],  # class 3: GT only, never right -> IoU 0, Acc 0
        ]
    )
    m = compute_sem_seg_metrics(confusion)
    iou = m["IoU"]
    assert iou["class_0"] == pytest.approx(100 * 3 / 6)
    assert iou["class_1"] == pytest.approx(100 * 4 / 5)
    assert math.isnan(iou["class_2"])
    assert iou["class_3"] == 0.0
    assert m["mIoU"] == pytest.approx((50 + 80 + 0) / 3)
    assert m["Acc"]["class_0"] == pytest.approx(75.0)
    assert m["Acc"]["class_1"] == 100.0
    assert math.isnan(m["Acc"]["class_2"])
    assert m["Acc"]["class_3"] == 0.0
    assert m["mAcc"] == pytest.approx((75 + 100 + 0) / 3)
    assert m["fwIoU"] == pytest.approx(4 / 10 * 50 + 4 / 10 * 80 + 2 / 10 * 0)
    assert m["pAcc"] == pytest.approx(70.0)
    assert m["num_pixels"] == 10
    assert m["num_classes_present"] == 3


def test_compute_metrics_validates_inputs():
    with pytest.raises(ValueError, match="square"):
        compute_sem_seg_metrics(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="integer"):
        compute_sem_seg_metrics(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2 class names"):
        compute_sem_seg_metrics(np.zeros((3, 3), dtype=np.int64), ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        compute_sem_seg_metrics(np.zeros((2, 2), dtype=np.int64), ["a", "a"])


def test_empty_evaluation_warns_and_gives_nan():
    evaluator = SemSegEvaluator(3)
    evaluator.process(np.zeros((2, 2), np.int64), np.full((2, 2), 255))
    with pytest.warns(RuntimeWarning, match="no valid ground-truth pixel"):
        m = evaluator.evaluate()["sem_seg"]
    assert all(math.isnan(m[k]) for k in ("mIoU", "fwIoU", "mAcc", "pAcc"))
    assert all(math.isnan(v) for v in m["IoU"].values())
    assert m["num_pixels"] == 0 and m["num_classes_present"] == 0


# --- input forms --------------------------------------------------------------------------------


def test_batch_list_and_one_by_one_are_identical():
    pairs = make_pairs(sizes=((8, 9),) * 4 + ((5, 6),) * 2)
    one_by_one = evaluate_pairs(pairs)

    batched = SemSegEvaluator(K)
    batched.process(np.stack([p for p, _ in pairs[:4]]), np.stack([g for _, g in pairs[:4]]))
    batched.process([p for p, _ in pairs[4:]], [g for _, g in pairs[4:]])
    assert same(batched.evaluate(), one_by_one)

    listed = SemSegEvaluator(K)
    listed.process([p for p, _ in pairs], [g for _, g in pairs])
    assert same(listed.evaluate(), one_by_one)


@pytest.mark.parametrize(
    ("pred_dtype", "gt_dtype"),
    [(torch.int64, torch.int64), (torch.uint8, torch.uint8), (torch.int32, torch.int16)],
)
def test_torch_and_numpy_inputs_are_identical(pred_dtype, gt_dtype):
    pairs = make_pairs(3)
    expected = evaluate_pairs(pairs)
    evaluator = SemSegEvaluator(K)
    for pred, gt in pairs:
        # Non-contiguous tensors too.
        pred_t = torch.from_numpy(pred.T.copy()).to(pred_dtype).T
        evaluator.process(pred_t, torch.from_numpy(gt).to(gt_dtype))
    assert same(evaluator.evaluate(), expected)


def test_uint16_ground_truth_with_65535_ignore():
    pairs = make_pairs(4)
    expected = evaluate_pairs(pairs)
    evaluator = SemSegEvaluator(K, ignore_label=65535)
    for pred, gt in pairs:
        gt16 = np.where(gt == IGNORE, 65535, gt).astype(np.uint16)
        evaluator.process(pred.astype(np.uint8), gt16)
    assert same(evaluator.evaluate(), expected)


def test_negative_ignore_label():
    pairs = make_pairs(5)
    expected = evaluate_pairs(pairs)
    evaluator = SemSegEvaluator(K, ignore_label=-1)
    for pred, gt in pairs:
        evaluator.process(pred, np.where(gt == IGNORE, -1, gt).astype(np.int16))
    assert same(evaluator.evaluate(), expected)


def test_reset_and_confusion_matrix_is_a_copy():
    pairs = make_pairs(6)
    evaluator = SemSegEvaluator(K)
    evaluator.process(*pairs[0])
    cm = evaluator.confusion_matrix
    assert cm.dtype == np.int64 and cm.shape == (K, K) and cm.sum() > 0
    cm[:] = 0
    assert evaluator.confusion_matrix.sum() > 0
    evaluator.reset()
    assert evaluator.confusion_matrix.sum() == 0
    for pred, gt in pairs:
        evaluator.process(pred, gt)
    assert same(evaluator.evaluate(), evaluate_pairs(pairs))


def test_class_names_are_result_keys_and_nan_stays_nan():
    names = ["a", "b", "c", "d", "e", "f"]
    m = evaluate_pairs(make_pairs(), class_names=names)["sem_seg"]
    assert list(m["IoU"]) == names and list(m["Acc"]) == names
    assert isinstance(m["IoU"]["e"], float) and math.isnan(m["IoU"]["e"])


# --- errors -------------------------------------------------------------------------------------


def test_out_of_range_ground_truth_raises_with_values():
    evaluator = SemSegEvaluator(3)
    gt = np.array([[0, 7], [3, 255]])
    with pytest.raises(ValueError, match=r"ground-truth labels.*\[3, 7\]"):
        evaluator.process(np.zeros((2, 2), np.int64), gt)
    with pytest.raises(ValueError, match=r"ground-truth labels.*\[-2\]"):
        evaluator.process(np.zeros((2, 2), np.int64), np.array([[0, -2], [1, 2]]))
    assert evaluator.confusion_matrix.sum() == 0


def test_out_of_range_prediction_raises_with_values():
    evaluator = SemSegEvaluator(3)
    gt = np.zeros((2, 2), np.int64)
    with pytest.raises(ValueError, match=r"predicted labels outside \[0, 3\).*\[-1, 3\]"):
        evaluator.process(np.array([[0, 3], [-1, 1]]), gt)
    # A bad second map of a batch: nothing of the call is accumulated, the index is named.
    with pytest.raises(ValueError, match="label map 1"):
        evaluator.process([np.zeros((2, 2), np.int64), np.full((2, 2), 9)], [gt, gt])
    assert evaluator.confusion_matrix.sum() == 0


def test_shape_mismatch_raises_with_shapes():
    evaluator = SemSegEvaluator(3)
    with pytest.raises(ValueError, match=r"\[2, 3\] != ground-truth shape \[3, 2\]"):
        evaluator.process(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="2 predicted label maps but 3"):
        evaluator.process(np.zeros((2, 4, 4), np.int64), np.zeros((3, 4, 4), np.int64))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        evaluator.process(np.zeros((1, 1, 4, 4), np.int64), np.zeros((1, 1, 4, 4), np.int64))


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="integer class indices"):
        SemSegEvaluator(3).process(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="ignore_label 0"):
        SemSegEvaluator(3, ignore_label=0)
    with pytest.raises(ValueError, match="2 class names"):
        SemSegEvaluator(3, class_names=["a", "b"])


# --- DatasetEvaluators --------------------------------------------------------------------------


class _Counter(DatasetEvaluator):
    def __init__(self, key: str) -> None:
        self.key = key
        self.n = 0

    def reset(self) -> None:
        self.n = 0

    def process(self, inputs, outputs) -> None:
        self.n += 1

    def evaluate(self) -> dict:
        return {self.key: {"n": self.n}}


def test_dataset_evaluators_fan_out_and_merge():
    pred, gt = make_pairs()[0]
    sem = SemSegEvaluator(K)
    combined = DatasetEvaluators([sem, _Counter("count")])
    combined.reset()
    combined.process(pred, gt)
    combined.process(pred, gt)
    results = combined.evaluate()
    assert set(results) == {"sem_seg", "count"}
    assert results["count"] == {"n": 2}
    assert same(results["sem_seg"], evaluate_pairs([(pred, gt)] * 2)["sem_seg"])
    combined.reset()
    assert sem.confusion_matrix.sum() == 0

    with pytest.raises(ValueError, match="'count'"):
        DatasetEvaluators([_Counter("count"), _Counter("count")]).evaluate()


def test_base_evaluator_must_be_implemented():
    with pytest.raises(NotImplementedError, match="process"):
        DatasetEvaluator().process(None, None)
    with pytest.raises(NotImplementedError, match="evaluate"):
        DatasetEvaluator().evaluate()


# --- distributed --------------------------------------------------------------------------------


def test_distributed_gloo_matches_single_process(tmp_path):
    # A light module (see its docstring): spawned children import it, not this test module.
    # Pytest's default import mode puts this directory on sys.path, which children inherit.
    import _sem_seg_dist_worker
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    pairs = make_pairs(11, sizes=((10, 13), (7, 9), (12, 5), (13, 10), (4, 4), (9, 9)))
    out_file = tmp_path / "rank0.pkl"
    ctx = mp.spawn(
        _sem_seg_dist_worker.run,
        args=(2, str(tmp_path / "pg"), str(out_file), pairs, K),
        nprocs=2,
        join=False,
    )
    deadline = time.monotonic() + 60
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("distributed evaluation workers did not finish within 60 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)
    with open(out_file, "rb") as f:
        got = pickle.load(f)
    expected = evaluate_pairs(pairs)
    assert same(got["results"], expected)
    # Rank 0's own matrix is untouched by the reduction and covers only its half.
    single_half = SemSegEvaluator(K)
    for pred, gt in pairs[:3]:
        single_half.process(pred, gt)
    np.testing.assert_array_equal(got["cm"], single_half.confusion_matrix)
    # distributed=False does not reduce.
    assert same(got["local"], evaluate_pairs(pairs[:1]))
