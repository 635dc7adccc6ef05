"""Tests for yolojax.evaluation: hand-computed APs, and equality with a devkit-style loop.

The reference loop lives in benchmarks/voc_reference.py (shared with the benchmark) and is
imported as the `benchmarks` package from the repository root, which `python -m pytest` puts
on sys.path.
"""

import warnings

import numpy as np
import pytest

from benchmarks.voc_reference import voc_ap, voc_eval
from yolojax.average_precision import precision_envelope
from yolojax.evaluation import VOCEvaluator

A = [0, 0, 10, 10]
B = [20, 20, 30, 30]
FAR = [50, 50, 60, 60]  # overlaps nothing


def image(gts=(), dets=(), difficult=()):
    """An `add` argument tuple from gts [(box, label)], dets [(box, score, label)] and the
    indices of the difficult ground truths."""
    gt_boxes = np.array([box for box, _ in gts], dtype=float).reshape(-1, 4)
    gt_labels = np.array([label for _, label in gts], dtype=np.int64)
    gt_difficult = np.isin(np.arange(len(gts)), difficult)
    pred_boxes = np.array([box for box, _, _ in dets], dtype=float).reshape(-1, 4)
    pred_scores = np.array([score for _, score, _ in dets], dtype=float)
    pred_labels = np.array([label for _, _, label in dets], dtype=np.int64)
    return gt_boxes, gt_labels, gt_difficult, pred_boxes, pred_scores, pred_labels


def evaluate(images, num_classes=1, **kwargs):
    evaluator = VOCEvaluator(num_classes, **kwargs)
    for args in images:
        evaluator.add(*args)
    return evaluator.compute()


def test_11point_and_area_ap_hand_computed():
    # TP, FP, TP over 2 positives: recall [.5, .5, 1], precision [1, .5, 2/3].
    # Area: envelope [1, 2/3, 2/3] -> .5 * 1 + .5 * 2/3 = 5/6.
    # 11-point: t = 0 .. .5 (6 points) see precision 1, t = .6 .. 1 (5 points) see 2/3
    # -> (6 + 10/3) / 11 = 28/33.
    images = [image(gts=[(A, 0), (B, 0)], dets=[(A, 0.9, 0), (FAR, 0.8, 0), (B, 0.7, 0)])]
    results = evaluate(images, use_07_metric=True)
    np.testing.assert_allclose(results["precision"][0], [1, 0.5, 2 / 3])
    np.testing.assert_allclose(results["recall"][0], [0.5, 0.5, 1])
    assert results["AP_11point"][0] == pytest.approx(28 / 33)
    assert results["AP_area"][0] == pytest.approx(5 / 6)
    assert results["mAP"] == pytest.approx(28 / 33)
    assert evaluate(images, use_07_metric=False)["mAP"] == pytest.approx(5 / 6)


def test_without_difficult_flags_no_ground_truth_is_difficult():
    gt_boxes, gt_labels, _, *detections = image(
        gts=[(A, 0), (B, 0)], dets=[(A, 0.9, 0), (FAR, 0.8, 0), (B, 0.7, 0)]
    )
    evaluator = VOCEvaluator(1)
    evaluator.add(gt_boxes, gt_labels, None, *detections)
    assert evaluator.compute()["mAP"] == pytest.approx(28 / 33)  # as the case above


def test_precision_envelope_hand_computed():
    # The case above: recall [.5, .5, 1], precision [1, .5, 2/3], framed by recall 0 and 1.
    # Best precision at each recall or beyond: [1, 1, 2/3, 2/3, 0].
    recall, envelope = precision_envelope(np.array([0.5, 0.5, 1]), np.array([1, 0.5, 2 / 3]))
    np.testing.assert_allclose(recall, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(envelope, [1, 1, 2 / 3, 2 / 3, 0])
    # Drawn as steps (envelope[i + 1] over (recall[i], recall[i + 1]]), its area is the AP.
    assert np.sum(np.diff(recall) * envelope[1:]) == pytest.approx(5 / 6)


def test_a_precision_that_rises_later_lifts_the_envelope_before_it():
    # TP, FP, TP, TP over 3 positives: recall [1/3, 1/3, 2/3, 1], precision [1, 1/2, 2/3, 3/4].
    # The envelope (best precision at that recall or beyond) is [1, 3/4, 3/4, 3/4]: at recall
    # 2/3 it is the later 3/4, not the 2/3 measured there.
    # Area: 1/3 · 1 + 1/3 · 3/4 + 1/3 · 3/4 = 5/6 (the raw precisions would give 29/36).
    # 11-point: t = 0 .. .3 (4 points) see 1; t = .4 .. 1 (7 points) see 3/4 -> 37/44.
    c = [40, 40, 50, 50]
    images = [
        image(
            gts=[(A, 0), (B, 0), (c, 0)],
            dets=[(A, 0.9, 0), (FAR, 0.8, 0), (B, 0.7, 0), (c, 0.6, 0)],
        )
    ]
    results = evaluate(images)
    np.testing.assert_allclose(results["precision"][0], [1, 1 / 2, 2 / 3, 3 / 4])
    np.testing.assert_allclose(results["recall"][0], [1 / 3, 1 / 3, 2 / 3, 1])
    assert results["AP_area"][0] == pytest.approx(5 / 6)
    assert results["AP_11point"][0] == pytest.approx(37 / 44)


def test_duplicate_detection_is_a_false_positive():
    # The .8 detection hits A again (IoU 100/110): TP, FP, TP -> the same 28/33 and 5/6.
    duplicate = [0, 0, 10, 11]
    images = [image(gts=[(A, 0), (B, 0)], dets=[(A, 0.9, 0), (duplicate, 0.8, 0), (B, 0.7, 0)])]
    results = evaluate(images)
    np.testing.assert_allclose(results["precision"][0], [1, 0.5, 2 / 3])
    assert results["AP_11point"][0] == pytest.approx(28 / 33)
    assert results["AP_area"][0] == pytest.approx(5 / 6)


def test_taken_best_ground_truth_gives_false_positive_even_if_another_is_free():
    # Devkit rule: the .8 detection's best match is A (IoU 100/105 = .95 > 105/120 = .875
    # with C), already taken by the .9 one, so it is a FP although C is free and IoU > .5.
    # TP, FP over 2 positives: recall [.5, .5], precision [1, .5] -> area .5, 11-point 6/11.
    c = [0, 0, 10, 12]
    images = [image(gts=[(A, 0), (c, 0)], dets=[(A, 0.9, 0), ([0, 0, 10, 10.5], 0.8, 0)])]
    results = evaluate(images)
    np.testing.assert_allclose(results["precision"][0], [1, 0.5])
    assert results["AP_area"][0] == pytest.approx(0.5)
    assert results["AP_11point"][0] == pytest.approx(6 / 11)


def test_difficult_ground_truth_is_neither_hit_nor_miss():
    # D is difficult: the .9 detection on it is ignored, and not finding it costs nothing.
    # Counted: TP (A), FP (FAR) over 1 positive: recall [1, 1], precision [1, .5] -> AP 1.
    d = [100, 100, 110, 110]
    images = [
        image(
            gts=[(A, 0), (d, 0)],
            dets=[(d, 0.9, 0), (A, 0.8, 0), (FAR, 0.7, 0)],
            difficult=[1],
        )
    ]
    results = evaluate(images)
    assert results["num_positives"].tolist() == [1]
    np.testing.assert_allclose(results["precision"][0], [1, 0.5])
    np.testing.assert_allclose(results["recall"][0], [1, 1])
    assert results["AP_11point"][0] == pytest.approx(1.0)
    assert results["AP_area"][0] == pytest.approx(1.0)


@pytest.mark.parametrize("difficult_first, expected_ap", [(True, 0.0), (False, 1.0)])
def test_equal_iou_picks_the_first_ground_truth(difficult_first, expected_ap):
    # The detection overlaps both by 90/110; like np.argmax, the first given wins. If that
    # is the difficult one the detection is ignored (AP 0: nothing found), else it is a TP.
    left, right, det = [0, 0, 10, 10], [2, 0, 12, 10], [1, 0, 11, 10]
    gts = [(left, 0), (right, 0)] if difficult_first else [(right, 0), (left, 0)]
    difficult = [0] if difficult_first else [1]
    results = evaluate([image(gts=gts, dets=[(det, 0.9, 0)], difficult=difficult)])
    assert results["AP_area"][0] == pytest.approx(expected_ap)


@pytest.mark.parametrize(
    "det, expected_ap", [([0, 0, 10, 4.9], 0.0), ([0, 0, 10, 5], 1.0), ([0, 0, 10, 5.5], 1.0)]
)
def test_iou_must_reach_the_threshold(det, expected_ap):
    # IoU 49/100 is not a match; 50/100 = .5 exactly is (VOCevaldet.m: ovmax>=minoverlap;
    # voc_eval.py's `>` would reject it), and so is 55/100.
    results = evaluate([image(gts=[(A, 0)], dets=[(det, 0.9, 0)])])
    assert results["AP_11point"][0] == pytest.approx(expected_ap)
    assert results["AP_area"][0] == pytest.approx(expected_ap)


@pytest.mark.parametrize(
    "det, plus_one, expected_ap",
    [
        (FAR, False, 0.0),
        ([10, 0, 20, 10], False, 0.0),  # shares A's edge: no overlap
        ([10, 0, 20, 10], True, 1.0),  # with +1 pixel widths the edge column is shared
        ([9, 0, 20, 10], False, 1.0),
    ],
)
def test_at_a_threshold_of_zero_only_overlapping_boxes_match(det, plus_one, expected_ap):
    # VOCevaldet.m computes an overlap only where iw>0 & ih>0; otherwise ovmax stays -inf.
    images = [image(gts=[(A, 0)], dets=[(det, 0.9, 0)])]
    results = evaluate(images, iou_threshold=0.0, plus_one=plus_one)
    assert results["AP_area"][0] == pytest.approx(expected_ap)


def test_plus_one_refuses_normalized_boxes():
    # Boxes 0.02 apart: with a pixel added to each width (0.2 + 1) they overlap by 0.98 a
    # side, IoU 0.98**2 / (2 * 1.2**2 - 0.98**2) = 0.5003, an mAP of 1 for a miss.
    evaluator = VOCEvaluator(1, plus_one=True)
    with pytest.raises(ValueError, match=r"plus_one=True takes pixel boxes.*normalized_yxyx_to_p"):
        evaluator.add([[0.1, 0.1, 0.3, 0.3]], [0], None, [[0.32, 0.32, 0.52, 0.52]], [0.9], [0])
    assert evaluator.num_images == 0
    # Also beside a detector's unclipped detection reaching past the image's edge.
    with pytest.raises(ValueError, match=r"plus_one=True takes pixel boxes"):
        evaluator.add([[0.1, 0.1, 0.3, 0.3]], [0], None, [[0.9, 0.9, 1.01, 1.01]], [0.9], [0])
    # Without plus_one they are scored as they are: no overlap, AP 0.
    evaluator = VOCEvaluator(1, plus_one=False)
    evaluator.add([[0.1, 0.1, 0.3, 0.3]], [0], None, [[0.32, 0.32, 0.52, 0.52]], [0.9], [0])
    assert evaluator.compute()["mAP"] == 0.0
    # Whole pixel coordinates within [0, 1] are pixels: a point annotated at the corner.
    evaluator = VOCEvaluator(1, plus_one=True)
    evaluator.add([[0, 0, 1, 1]], [0], None, [[0, 0, 1, 1]], [0.9], [0])
    assert evaluator.compute()["mAP"] == 1.0


@pytest.mark.parametrize("plus_one, expected_ap", [(False, 0.0), (True, 1.0)])
def test_plus_one_pixel_convention(plus_one, expected_ap):
    # gt [0,0,5,5], det [2,0,7,5]. Without +1: 3*5 / (25 + 25 - 15) = .43 -> not a match.
    # With +1 (6x6 boxes): 4*6 / (36 + 36 - 24) = .5 -> a match.
    images = [image(gts=[([0, 0, 5, 5], 0)], dets=[([2, 0, 7, 5], 0.9, 0)])]
    results = evaluate(images, plus_one=plus_one)
    assert results["AP_area"][0] == pytest.approx(expected_ap)


def test_detections_without_ground_truth_of_their_class_and_image():
    # Image 1: A of class 0. Image 2: nothing. The .95 detection (image 2, class 0) is a FP
    # although its box equals image 1's A; the .93 one (image 1, class 1) is a FP of class 1,
    # which has no positives -> NaN, left out of the mean. Class 0: FP, TP over 1 positive:
    # recall [0, 1], precision [0, .5] -> area .5; every 11-point threshold sees .5 -> .5.
    images = [
        image(gts=[(A, 0)], dets=[(A, 0.93, 1), (A, 0.9, 0)]),
        image(dets=[(A, 0.95, 0)]),
    ]
    results = evaluate(images, num_classes=2)
    np.testing.assert_allclose(results["precision"][0], [0, 0.5])
    np.testing.assert_allclose(results["recall"][0], [0, 1])
    assert results["AP_area"][0] == pytest.approx(0.5)
    assert results["AP_11point"][0] == pytest.approx(0.5)
    assert np.isnan(results["AP"][1])
    np.testing.assert_array_equal(results["precision"][1], [0.0])
    assert np.isnan(results["recall"][1]).all()
    assert results["mAP"] == pytest.approx(0.5)


def test_classes_without_positives_are_nan_and_left_out_of_the_mean():
    # Class 0: found (AP 1). Class 1: only a difficult object, found (NaN). Class 2: nothing.
    # The mean is over class 0 alone: 1, not 1/3 and not NaN.
    images = [image(gts=[(A, 0), (B, 1)], dets=[(A, 0.9, 0), (B, 0.8, 1)], difficult=[1])]
    results = evaluate(images, num_classes=3)
    assert results["AP"][0] == pytest.approx(1.0)
    assert np.isnan(results["AP"][1:]).all()
    assert results["mAP_11point"] == pytest.approx(1.0)
    assert results["mAP_area"] == pytest.approx(1.0)
    assert np.isnan(VOCEvaluator(3).compute()["mAP"])


@pytest.mark.parametrize("tp_first, expected_ap", [(False, 0.5), (True, 1.0)])
def test_equal_scores_keep_insertion_order(tp_first, expected_ap):
    # Both score .9. FP then TP: precision [0, .5] -> AP .5; TP then FP: [1, .5] -> AP 1.
    hit, miss = (A, 0.9, 0), (FAR, 0.9, 0)
    first, second = (image(gts=[(A, 0)], dets=[hit]), image(dets=[miss]))
    images = [first, second] if tp_first else [second, first]
    assert evaluate(images)["AP_area"][0] == pytest.approx(expected_ap)


def test_11point_uses_the_devkit_thresholds():
    # 3 of 10 found, precision 1: recall .1, .2, .3. The devkit's 4th threshold is
    # np.arange(0, 1.1, .1)[3] = 0.30000000000000004 > .3, so only 3 points score: 3/11.
    boxes = [[20 * i, 0, 20 * i + 10, 10] for i in range(10)]
    images = [image(gts=[(box, 0) for box in boxes], dets=[(box, 0.9, 0) for box in boxes[:3]])]
    results = evaluate(images)
    assert results["AP_11point"][0] == pytest.approx(3 / 11)
    assert results["AP_area"][0] == pytest.approx(0.3)


def random_images(rng, num_images, num_classes):
    """Small integer boxes, so that IoU ties and IoU == .5 occur; detections copy ground truth
    with jitter (duplicates, wrong classes), plus random ones; scores on a coarse grid (ties);
    some images without ground truth or without detections."""
    images = []
    for _ in range(num_images):
        num_gt, num_pred = rng.integers(0, 5), rng.integers(0, 12)
        corner, size = rng.integers(0, 20, (num_gt, 2)), rng.integers(1, 12, (num_gt, 2))
        gt_boxes = np.concatenate([corner, corner + size], axis=1).astype(float)
        gt_labels = rng.integers(0, num_classes, num_gt)
        source = rng.integers(0, max(num_gt, 1), num_pred)
        corner, size = rng.integers(0, 20, (num_pred, 2)), rng.integers(1, 12, (num_pred, 2))
        pred_boxes = np.concatenate([corner, corner + size], axis=1).astype(float)
        copied = (rng.random(num_pred) < 0.7) & (num_gt > 0)
        if num_gt:
            pred_boxes[copied] = gt_boxes[source[copied]] + rng.integers(-2, 3, (copied.sum(), 4))
        pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1)
        pred_labels = rng.integers(0, num_classes, num_pred)
        if num_gt:
            right_class = copied & (rng.random(num_pred) < 0.8)
            pred_labels[right_class] = gt_labels[source[right_class]]
        images.append(
            (
                gt_boxes,
                gt_labels,
                rng.random(num_gt) < 0.3,
                pred_boxes,
                rng.integers(0, 5, num_pred) / 4,
                pred_labels,
            )
        )
    return images


@pytest.mark.parametrize("plus_one", [False, True])
def test_equals_devkit_style_reference_on_random_data(plus_one):
    num_classes, ignored_somewhere = 3, False
    for seed in range(40):
        images = random_images(np.random.default_rng(seed), num_images=15, num_classes=3)
        results = evaluate(images, num_classes, plus_one=plus_one)
        for label in range(num_classes):
            rec, prec, counted, npos = voc_eval(images, label, 0.5, plus_one)
            ignored_somewhere |= not counted.all()
            expected = [voc_ap(rec, prec, True), voc_ap(rec, prec, False)] if npos else [np.nan] * 2
            # Bit for bit: same float operations in the same order.
            np.testing.assert_array_equal(
                [results["AP_11point"][label], results["AP_area"][label]], expected
            )
            np.testing.assert_array_equal(results["precision"][label], prec[counted])
            np.testing.assert_array_equal(results["recall"][label], rec[counted])
    assert ignored_somewhere  # the data did exercise detections of difficult objects


def normalized_batch(image_size):
    """Batch shape (1 device, 2 examples). Example 0 (h=40, w=4 if image_size is (40, 4)):
    gt pixel [0, 0, 3, 3], detection pixel [1, 0, 4, 3]; the rest is padding or invalid."""
    gt_boxes = np.zeros((1, 2, 2, 4), np.float32)
    gt_boxes[0, 0, 0] = [0, 0, 0.075, 0.75]  # yxyx * (40, 4, 40, 4) -> xyxy [0, 0, 3, 3]
    gt_boxes[0, 1, 0] = [0.5, 0.5, 0.6, 0.6]  # an object of the invalid example: a miss
    pred_boxes = np.zeros((1, 2, 3, 4), np.float32)
    pred_boxes[0, 0, 0] = [0, 0.25, 0.075, 1.0]  # -> xyxy [1, 0, 4, 3]
    pred_boxes[0, 0, 1] = [0.9, 0.9, 1.0, 1.0]  # a padded detection that would be a FP
    return dict(
        gt_boxes=gt_boxes,
        gt_labels=np.array([[[0, 99], [0, 0]]]),  # 99: padding, never read
        gt_difficult=np.zeros((1, 2, 2), bool),
        gt_mask=np.array([[[True, False], [True, False]]]),
        pred_boxes=pred_boxes,
        pred_scores=np.array([[[0.5, 0.99, 0.0], [0.7, 0.0, 0.0]]], np.float32),
        pred_labels=np.zeros((1, 2, 3), np.int32),
        pred_valid=np.array([[[True, False, False], [True, False, False]]]),
        image_size=np.array([[image_size, image_size]], np.int32),
        valid=np.array([[True, False]]),
    )


@pytest.mark.parametrize("image_size, expected_ap", [((40, 4), 1.0), ((4, 40), 0.0)])
def test_add_normalized_batch_converts_to_pixels_and_skips_padding(image_size, expected_ap):
    # With +1 pixels IoU depends on the scale. (height, width) = (40, 4): 3*4 / (16+16-12)
    # = .6 > .55 -> AP 1. Read as (width, height) instead: x spans 30 and 30 shifted by 10,
    # y spans .3: 21*1.3 / (2*31*1.3 - 21*1.3) = 21/41 = .51 -> AP 0. The invalid example
    # and the masked entries, if read, would add a miss or a FP.
    evaluator = VOCEvaluator(1, iou_threshold=0.55, plus_one=True)
    evaluator.add_normalized_batch(**normalized_batch(image_size))
    results = evaluator.compute()
    assert evaluator.num_images == 1
    assert results["num_positives"].tolist() == [1]
    assert results["AP_area"][0] == pytest.approx(expected_ap)


def test_add_normalized_batch_after_other_images_keeps_each_image_apart():
    # Image 0 by add: A (pixels) of class 0, no detection. Image 1, a normalized batch of a
    # 100 × 100 image: B, detected (.9), and a detection (.8) where A lies in image 0. Image
    # 1 has no A: TP (B), FP over 2 positives: precision [1, .5], recall [.5, .5] -> area
    # .5 · 1 = .5; 11-point: t = 0 .. .5 see precision 1, t = .6 .. 1 nothing -> 6/11.
    # Numbered from 0 in the batch, image 1's ground truth or detections would meet image
    # 0's (B missed, or the detection of A a TP).
    evaluator = VOCEvaluator(1)
    evaluator.add(*image(gts=[(A, 0)]))
    evaluator.add_normalized_batch(
        gt_boxes=np.array([[[0.2, 0.2, 0.3, 0.3]]]),  # yxyx × 100 -> xyxy B
        gt_labels=np.array([[0]]),
        gt_difficult=None,
        gt_mask=np.array([[True]]),
        pred_boxes=np.array([[[0.2, 0.2, 0.3, 0.3], [0.0, 0.0, 0.1, 0.1]]]),  # B, A
        pred_scores=np.array([[0.9, 0.8]]),
        pred_labels=np.array([[0, 0]]),
        pred_valid=np.array([[True, True]]),
        image_size=np.array([[100, 100]]),
        valid=np.array([True]),
    )
    results = evaluator.compute()
    assert evaluator.num_images == 2
    np.testing.assert_allclose(results["precision"][0], [1, 0.5])
    np.testing.assert_allclose(results["recall"][0], [0.5, 0.5])
    assert results["AP_area"][0] == pytest.approx(0.5)
    assert results["AP_11point"][0] == pytest.approx(6 / 11)


@pytest.mark.parametrize(
    "field, value, name",
    [
        (0, np.zeros(3), "gt_boxes"),
        (1, np.zeros(2, int), "gt_labels"),
        (1, np.zeros(1), "gt_labels"),  # float class ids
        (2, np.zeros(3, bool), "gt_difficult"),
        (2, np.array([2]), r"gt_difficult must be bool or 0/1, got values \[2\]"),  # a count
        (3, np.zeros((1, 5)), "pred_boxes"),
        (4, np.array([np.nan]), "pred_scores"),
        (4, np.zeros(2), "pred_scores"),
        (5, np.array([3]), "pred_labels"),  # num_classes is 3
        (5, np.array([-1]), "pred_labels"),
        # [x, y, w, h] boxes: a max below its min, which would score 0 unnoticed.
        (0, np.array([[50.0, 10.0, 10.0, 50.0]]), r"gt_boxes must be \[xmin, ymin, xmax"),
        (3, np.array([[50.0, 10.0, 10.0, 50.0]]), r"pred_boxes .* max below their min"),
    ],
)
def test_add_rejects_bad_input_naming_the_argument(field, value, name):
    args = list(image(gts=[(A, 0)], dets=[(A, 0.9, 2)]))
    args[field] = value
    with pytest.raises(ValueError, match=name):
        VOCEvaluator(3).add(*args)


def test_add_refuses_ground_truth_and_detections_in_different_units():
    # A detector's pixel boxes against normalized ground truth would score 0 without a word.
    normalized, pixels = [0.0, 0.0, 0.25, 0.25], [0, 0, 100, 100]
    with pytest.raises(ValueError, match=r"gt_boxes are within \[0, 1\] .* pred_boxes reach 100"):
        VOCEvaluator(1).add(*image(gts=[(normalized, 0)], dets=[(pixels, 0.9, 0)]))
    with pytest.raises(ValueError, match=r"pred_boxes are within \[0, 1\] .* gt_boxes reach 100"):
        VOCEvaluator(1).add(*image(gts=[(pixels, 0)], dets=[(normalized, 0.9, 0)]))
    for box in (normalized, pixels):  # either unit, the same on both sides
        evaluator = VOCEvaluator(1)
        evaluator.add(*image(gts=[(box, 0)], dets=[(box, 0.9, 0)]))
        assert evaluator.compute()["mAP"] == 1.0


@pytest.mark.parametrize(
    "key, value, name",
    [
        ("image_size", np.ones((1, 2, 3)), "image_size"),
        ("image_size", np.zeros((1, 2, 2)), "image_size"),
        ("gt_mask", np.ones((1, 2, 3), bool), "gt_mask"),
        ("gt_mask", np.array([[[1, 0], [1, -1]]]), r"gt_mask must be bool or 0/1"),
        ("pred_labels", np.full((1, 2, 3), 7), "pred_labels"),
        ("gt_boxes", np.tile([0.5, 0.5, 0.1, 0.2], (1, 2, 2, 1)), "gt_boxes must be normalized"),
        # Pixel boxes (here of a 40 × 4 image) would be scaled again: mAP 0, without a word.
        ("gt_boxes", np.tile([0.0, 0.0, 3.0, 3.0], (1, 2, 2, 1)), "gt_boxes .* outside"),
        ("pred_boxes", np.tile([1.0, 0.0, 4.0, 3.0], (1, 2, 3, 1)), "pred_boxes .* outside"),
    ],
)
def test_add_normalized_batch_rejects_bad_input(key, value, name):
    batch = normalized_batch((40, 4))
    batch[key] = value
    with pytest.raises(ValueError, match=name):
        VOCEvaluator(1).add_normalized_batch(**batch)


def test_padding_given_as_ground_truth_is_warned_of():
    # Padding read as objects: positives no detection can match (AP 0.36 instead of 1).
    boxes = [[10, 10, 50, 50], [0, 0, 0, 0], [0, 0, 0, 0]]
    detections = [[10, 10, 50, 50]], [0.9], [0]
    evaluator = VOCEvaluator(1)
    with pytest.warns(UserWarning, match=r"2 all-zero box\(es\).*pass only the image's real"):
        evaluator.add(boxes, [0, 0, 0], None, *detections)
    assert evaluator.compute()["num_positives"].tolist() == [3]  # counted, as warned
    # The real boxes alone: nothing to warn of, and a perfect AP.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluator = VOCEvaluator(1)
        evaluator.add(boxes[:1], [0], None, *detections)
        assert evaluator.compute()["mAP"] == 1.0
        # In the devkit's pixel convention an all-zero box is a 1×1 box at the corner.
        VOCEvaluator(1, plus_one=True).add(boxes[1:2], [0], None, [], [], [])
    batch = normalized_batch((40, 4))
    batch["gt_mask"] = np.ones_like(batch["gt_mask"])  # the padding slot marked real
    batch["gt_labels"] = np.zeros_like(batch["gt_labels"])  # with a class id of 0, as padded
    with pytest.warns(UserWarning, match=r"1 all-zero box\(es\).*mark the real boxes with gt_m"):
        VOCEvaluator(1).add_normalized_batch(**batch)


def test_add_normalized_batch_takes_detections_reaching_past_the_image():
    # Another detector's unclipped boxes: normalized, a little past the image's edges.
    batch = normalized_batch((40, 4))
    batch["pred_boxes"][0, 0, 0] = [-0.0125, -0.25, 0.075, 0.75]  # -> xyxy [-1, -0.5, 3, 3]
    evaluator = VOCEvaluator(1, plus_one=False)
    evaluator.add_normalized_batch(**batch)
    # IoU with the gt [0, 0, 3, 3]: 9 / (4 × 3.5) = 0.64 ≥ 0.5, the only detection: AP 1.
    assert evaluator.compute()["mAP"] == 1.0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_classes=0), "num_classes"),
        (dict(num_classes=2, iou_threshold=1.5), "iou_threshold"),
        (dict(num_classes=2, iou_threshold="0.5"), "iou_threshold"),
        # False was taken for a threshold of 0: any overlap matched, a mAP too high.
        (dict(num_classes=2, iou_threshold=False), "iou_threshold must be a finite number"),
        (dict(num_classes=True), "num_classes must be a positive integer"),
        (dict(num_classes=2, iou_threshold=1.0), r"iou_threshold .* < 1; got 1\.0"),
        (dict(num_classes=2, class_names=["cat"]), "class_names"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VOCEvaluator(**kwargs)
    assert VOCEvaluator(2, iou_threshold=np.float32(0.5)).iou_threshold == 0.5  # a number


def test_perfect_detections_score_exactly_one():
    # The devkit's running sum of 11 precisions of 1, each divided by 11, is 1 + 2e-16
    # (`0.0` plus `1 / 11` eleven times; Python 3.12's sum() compensates, that loop does not).
    results = evaluate([image(gts=[(A, 0)], dets=[(A, 0.9, 0)])])
    assert results["mAP_11point"] == 1.0 and results["mAP_area"] == 1.0


def test_add_normalized_batch_takes_no_difficult_flags_as_add_does():
    batch = normalized_batch((40, 4))
    evaluator = VOCEvaluator(1, iou_threshold=0.55, plus_one=True)
    evaluator.add_normalized_batch(**{**batch, "gt_difficult": None})
    # The one real ground truth counts as a positive, matched as with explicit flags.
    assert evaluator.compute()["num_positives"].tolist() == [1]
    assert evaluator.compute()["mAP"] == 1.0


def test_summary_of_another_evaluators_results_is_refused():
    three = VOCEvaluator(3)
    three.add(*image(gts=[(A, 2)], dets=[(A, 0.9, 2)]))
    with pytest.raises(ValueError, match=r"results hold 3 classes, but this evaluator has num_"):
        VOCEvaluator(2).summary(three.compute())


def test_summary_lists_classes_by_name():
    evaluator = VOCEvaluator(2, class_names=["cat", "dog"])
    evaluator.add(*image(gts=[(A, 0)], dets=[(A, 0.9, 0)]))
    lines = evaluator.summary(evaluator.compute()).splitlines()
    assert lines[1].split() == ["cat", "1.0000", "1.0000", "1"]
    assert lines[2].split() == ["dog", "nan", "nan", "0"]
    assert lines[3].split() == ["mAP", "1.0000", "1.0000"]
    assert evaluator.summary().splitlines() == lines  # computed when not given
