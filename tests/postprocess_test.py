"""Decoding and class-aware NMS against hand-made grids and a plain NumPy reference."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax import postprocess, targets
from yolojax.config import default_config, load_run_config
from yolojax.workdir import CONFIG_FILE

S, C, B = 4, 3, 2


def _perfect_outputs(boxes, labels):
    """Outputs a perfect detector would give: one-hot classes, box 0 = the target, conf 1."""
    grid = np.asarray(
        targets.encode(
            np.asarray(boxes, np.float32),
            np.asarray(labels),
            np.ones(len(boxes), bool),
            grid_size=S,
            num_classes=C,
        )
    )
    outputs = np.zeros((S, S, C + 5 * B), np.float32)
    outputs[..., :C] = grid[..., :C]
    outputs[..., C : C + 5] = grid[..., C : C + 5]  # [obj, x, y, w, h] = [conf, x, y, w, h]
    return outputs[None]


def test_encode_decode_round_trip():
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.55, 0.05, 0.95, 0.3], [0.6, 0.6, 0.9, 0.99]])
    labels = np.array([2, 0, 1])
    detections = postprocess.detect(
        _perfect_outputs(boxes, labels), num_classes=C, num_boxes=B, max_detections=10
    )
    assert int(detections.valid.sum()) == 3
    found = {
        int(label): np.asarray(box)
        for box, label, valid in zip(
            detections.boxes[0], detections.labels[0], detections.valid[0], strict=True
        )
        if valid
    }
    for box, label in zip(boxes, labels, strict=True):
        np.testing.assert_allclose(found[int(label)], box, atol=1e-6)
    np.testing.assert_allclose(detections.scores[0][detections.valid[0]], 1.0)


def test_decode_hand_computed_box_and_score():
    outputs = np.zeros((1, S, S, C + 5 * B), np.float32)
    # Cell (row 2, col 1), box 1: centre offset (0.5, 0.25), size 2 × 1 cells, conf 0.8;
    # class scores [0.1, 0.5, -0.3]. Centre = ((1 + 0.5) / 4, (2 + 0.25) / 4) = (0.375, 0.5625);
    # half sizes 0.25 × 0.125 → yxyx [0.4375, 0.125, 0.6875, 0.625].
    outputs[0, 2, 1, :C] = [0.1, 0.5, -0.3]
    outputs[0, 2, 1, C + 5 :] = [0.8, 0.5, 0.25, 2.0, 1.0]
    candidates = postprocess.decode(outputs, num_classes=C, num_boxes=B)
    boxes, scores = candidates  # a pair, and named: the two are the same arrays
    assert candidates.boxes is boxes and candidates.scores is scores
    index = (2 * S + 1) * B + 1  # (row, col, box) order
    np.testing.assert_allclose(boxes[0, index], [0.4375, 0.125, 0.6875, 0.625], atol=1e-6)
    # Scores = conf × class score, the negative class score clipped to 0.
    np.testing.assert_allclose(scores[0, index], [0.08, 0.4, 0.0], atol=1e-6)
    assert float(jnp.abs(scores[0, :index]).sum()) == 0.0  # empty boxes score nothing


def test_decode_clips_boxes_reaching_past_the_image_to_it():
    outputs = np.zeros((1, S, S, C + 5 * B), np.float32)
    # Cell (row 0, col 3), box 0: centre offset (0.5, 0.5), size 2 × 3 cells. Centre
    # ((3 + 0.5) / 4, (0 + 0.5) / 4) = (0.875, 0.125); half sizes 0.25 × 0.375 → yxyx
    # [-0.25, 0.625, 0.5, 1.125], past the top and right edges: clipped, [0, 0.625, 0.5, 1].
    outputs[0, 0, 3, :C] = [1.0, 0.0, 0.0]
    outputs[0, 0, 3, C : C + 5] = [0.9, 0.5, 0.5, 2.0, 3.0]
    boxes, scores = postprocess.decode(outputs, num_classes=C, num_boxes=B)
    index = (0 * S + 3) * B + 0  # (row, col, box) order
    np.testing.assert_allclose(boxes[0, index], [0.0, 0.625, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(scores[0, index], [0.9, 0.0, 0.0], atol=1e-6)


def test_decode_clips_confidence_and_scores_empty_boxes_zero():
    outputs = np.zeros((1, S, S, C + 5 * B), np.float32)
    outputs[0, 0, 0, :C] = [0.8, 0.5, 1.0]
    # Cell (0, 0): box 0 has confidence 1.5 (clipped to 1), box 1 confidence -0.5 (to 0).
    outputs[0, 0, 0, C:] = [1.5, 0.5, 0.5, 1.0, 1.0, -0.5, 0.5, 0.5, 1.0, 1.0]
    outputs[0, 1, 1, :C] = [1.0, 1.0, 1.0]
    # Cell (1, 1): box 0 has zero width, box 1 negative sizes (an empty box at its centre,
    # not an inverted one); both score 0 whatever their confidence.
    outputs[0, 1, 1, C:] = [0.9, 0.5, 0.5, 0.0, 1.0, 0.9, 0.5, 0.5, -1.0, -1.0]
    boxes, scores = postprocess.decode(outputs, num_classes=C, num_boxes=B)
    np.testing.assert_allclose(scores[0, 0], [0.8, 0.5, 1.0], atol=1e-6)
    np.testing.assert_array_equal(scores[0, 1], 0.0)
    cell_11 = (1 * S + 1) * B
    np.testing.assert_array_equal(scores[0, cell_11 : cell_11 + 2], 0.0)
    np.testing.assert_allclose(boxes[0, cell_11 + 1], [0.375] * 4, atol=1e-6)


def test_nms_boundaries_are_inclusive_for_scores_exclusive_for_overlap():
    # IoU of the two boxes is 0.5 exactly: "suppressed when IoU exceeds" keeps both; a
    # score equal to score_threshold is "at or above" it.
    boxes = np.array([[0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 0.25]], np.float32)
    scores = np.array([[0.9], [0.5]], np.float32)
    settings = dict(score_threshold=0.5, iou_threshold=0.5, max_detections=4)
    kept = postprocess.nms(boxes, scores, **settings)
    np.testing.assert_allclose(kept.scores[kept.valid], [0.9, 0.5])
    kept = postprocess.nms(boxes, scores, **{**settings, "iou_threshold": 0.49})
    np.testing.assert_allclose(kept.scores[kept.valid], [0.9])


def _reference_nms(boxes, scores, score_threshold, iou_threshold, max_detections):
    """Per-class greedy NMS written plainly, detection by detection. Of equal scores the
    earlier box, then the lower class, ranks first."""

    def iou(a, b):
        ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ih * iw
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    kept = []
    for c in range(scores.shape[1]):
        order = sorted(range(len(boxes)), key=lambda i: -scores[i, c])  # a stable sort
        order = [i for i in order if scores[i, c] >= score_threshold]
        chosen = []
        for i in order:
            if all(iou(boxes[i], boxes[j]) <= iou_threshold for j in chosen):
                chosen.append(i)
        kept += [(scores[i, c], c, i) for i in chosen]
    kept.sort(key=lambda t: (-t[0], t[2], t[1]))
    return kept[:max_detections]


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, False), (2, True), (3, True)])
def test_nms_matches_numpy_reference(seed, ties):
    rng = np.random.default_rng(seed)
    n = 60
    centre = rng.uniform(0.2, 0.8, (n, 2))
    size = rng.uniform(0.05, 0.4, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
    scores = rng.uniform(0, 1, (n, C)).astype(np.float32)
    if ties:  # scores of one decimal: many equal, which the order between them decides
        scores = np.round(scores, 1)
    expected = _reference_nms(boxes, scores, 0.3, 0.45, 25)
    got = jax.jit(
        lambda b, s: postprocess.nms(
            b, s, score_threshold=0.3, iou_threshold=0.45, max_detections=25
        )
    )(boxes, scores)
    assert int(got.valid.sum()) == len(expected)
    np.testing.assert_allclose(got.scores[: len(expected)], [t[0] for t in expected], rtol=1e-6)
    np.testing.assert_array_equal(got.labels[: len(expected)], [t[1] for t in expected])
    np.testing.assert_allclose(got.boxes[: len(expected)], boxes[[t[2] for t in expected]])
    assert not np.any(got.valid[len(expected) :])


@pytest.mark.parametrize("unit", [1.0, 448.0])  # normalized, or pixels of a 448 px image
def test_nms_keeps_overlapping_boxes_of_different_classes(unit):
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.52]], np.float32) * unit
    scores = np.array([[0.9, 0.0], [0.0, 0.8]], np.float32)
    same_class = np.array([[0.9, 0.0], [0.8, 0.0]], np.float32)
    kwargs = dict(score_threshold=0.1, iou_threshold=0.5, max_detections=4)
    assert int(postprocess.nms(boxes, scores, **kwargs).valid.sum()) == 2
    assert int(postprocess.nms(boxes, same_class, **kwargs).valid.sum()) == 1


def test_a_zero_score_threshold_keeps_every_scored_box_but_no_empty_one():
    outputs = np.zeros((1, S, S, C + 5 * B), np.float32)
    assert int(postprocess.detect(outputs, num_classes=C, num_boxes=B, score_threshold=0.0)
               .valid.sum()) == 0  # fmt: skip
    outputs[0, 1, 2, :C] = [0.0, 1.0, 0.0]
    outputs[0, 1, 2, C : C + 5] = [0.9, 0.5, 0.5, 1.0, 1.0]  # box 0: one cell, at its centre
    found = postprocess.detect(outputs, num_classes=C, num_boxes=B, score_threshold=0.0)
    assert int(found.valid.sum()) == 1
    assert (float(found.scores[0, 0]), int(found.labels[0, 0])) == (np.float32(0.9), 1)
    np.testing.assert_allclose(found.boxes[0, 0], [0.25, 0.5, 0.5, 0.75])


def test_nms_keeps_no_empty_box_of_ones_own():
    # decode scores empty boxes 0; boxes given to nms directly were kept, both of two
    # identical points (an empty box overlaps nothing, so neither suppressed the other).
    points = np.float32([[0.2, 0.2, 0.2, 0.2]] * 2 + [[0.1, 0.1, 0.4, 0.1]])  # no area
    found = postprocess.nms(points, np.float32([[0.5], [0.4], [0.3]]), max_detections=3)
    assert not np.any(found.valid)
    box = np.float32([[0.2, 0.2, 0.4, 0.4]])
    found = jax.jit(postprocess.nms)(np.concatenate([points, box]), np.float32([[0.9]] * 4))
    assert found.valid.tolist() == [True] + [False] * 99
    np.testing.assert_allclose(found.boxes[0], box[0])


def test_empty_boxes_of_ones_own_take_no_place_among_the_top_candidates():
    # pre_nms_top_k bounds the candidates that enter NMS: highly scored empty boxes took
    # those places, and the two real boxes behind them were lost.
    empty = [[0.1, 0.1, 0.1, 0.5]] * 3
    boxes = np.float32([*empty, [0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]])
    scores = np.float32([[0.9], [0.9], [0.9], [0.5], [0.4]])
    found = postprocess.nms(boxes, scores, max_detections=5, pre_nms_top_k=3)
    assert found.valid.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(found.boxes[:2], boxes[3:])


def test_nms_refuses_values_that_are_not_finite():
    boxes = np.float32([[np.nan, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    scores = np.float32([[0.9], [0.8], [0.7]])
    # A NaN box was returned as a detection, and suppressed nothing (its IoU is NaN).
    with pytest.raises(ValueError, match="boxes must be finite"):
        postprocess.nms(boxes, scores)
    with pytest.raises(ValueError, match="scores must be finite"):
        postprocess.nms(np.nan_to_num(boxes), np.float32([[np.nan], [0.8], [0.7]]))
    # Under jit they cannot be checked: the NaN box is no detection; the two others are.
    found = jax.jit(postprocess.nms)(boxes, scores)
    assert found.valid.tolist()[:3] == [True, True, False]
    np.testing.assert_allclose(found.boxes[:2], boxes[1:])


def test_outputs_that_are_not_finite_are_refused_where_known():
    # Clipped, NaN outputs scored 0: a diverged model's detections were none, with no error.
    outputs = np.zeros((3, S, S, C + 5 * B), np.float32)
    outputs[1, 0, 1, 0] = np.nan
    outputs[2, 1, 0, C + 2] = np.inf
    for function in (postprocess.decode, postprocess.detect):
        with pytest.raises(ValueError, match=r"NaN or infinite for image\(s\) \[1, 2\]"):
            function(outputs, num_classes=C, num_boxes=B)
    # Under jit the values are not known (the Detector checks its own outputs).
    detect = jax.jit(functools.partial(postprocess.detect, num_classes=C, num_boxes=B))
    assert not np.asarray(detect(outputs).valid).any()


def test_detect_takes_model_outputs_held_by_a_jitted_function():
    # A jitted function of the threshold alone, over outputs computed before: detect's
    # finiteness check of the known outputs was traced, and NumPy refused the tracer
    # (TracerArrayConversionError).
    outputs = jax.random.normal(jax.random.key(0), (2, S, S, C + 5 * B))

    def counts_of(outputs):
        detect = functools.partial(postprocess.detect, outputs, num_classes=C, num_boxes=B)
        return jax.jit(lambda threshold: detect(score_threshold=threshold).valid.sum(axis=1))

    found = postprocess.detect(outputs, num_classes=C, num_boxes=B, score_threshold=0.2)
    np.testing.assert_array_equal(counts_of(outputs)(0.2), found.valid.sum(axis=1))
    with pytest.raises(ValueError, match=r"NaN or infinite for image\(s\) \[1\]"):
        counts_of(outputs.at[1, 0, 0, 0].set(jnp.nan))(0.2)


def test_no_boxes_and_no_images_give_no_detections():
    settings = dict(score_threshold=0.1, iou_threshold=0.5, max_detections=5)
    none = postprocess.nms(np.zeros((0, 4)), np.zeros((0, C)), **settings)
    assert none.boxes.shape == (5, 4) and not np.any(none.valid)
    batch = postprocess.detect(np.zeros((0, S, S, C + 5 * B)), num_classes=C, num_boxes=B)
    assert batch.boxes.shape == (0, 100, 4) and batch.valid.shape == (0, 100)


def test_detect_output_is_fixed_size_even_when_few_candidates():
    outputs = jax.random.normal(jax.random.key(1), (2, 2, 2, C + 5 * B))
    detections = postprocess.detect(outputs, num_classes=C, num_boxes=B, max_detections=100)
    assert detections.boxes.shape == (2, 100, 4)
    assert detections.valid.shape == (2, 100)


def test_invalid_arguments():
    one_grid = jnp.zeros((S, S, C + 5 * B))
    with pytest.raises(ValueError, match=r"For one image's grid, pass outputs\[None\]\.$"):
        postprocess.detect(one_grid, num_classes=C, num_boxes=B)
    with pytest.raises(ValueError, match=r"shape \(N, S, S, C \+ 5B\); got \(2, 3, 4, 13\)\.$"):
        postprocess.detect(jnp.zeros((2, 3, 4, 13)), num_classes=C, num_boxes=B)  # no hint
    with pytest.raises(ValueError, match="C \\+ 5B"):
        postprocess.detect(jnp.zeros((1, S, S, C + 5 * B)), num_classes=C + 1, num_boxes=B)
    with pytest.raises(ValueError, match="iou_threshold"):
        postprocess.detect(jnp.zeros((1, S, S, 13)), num_classes=C, num_boxes=B, iou_threshold=2)


def test_pixel_detections_are_each_images_valid_ones_in_its_pixels():
    detections = postprocess.Detections(
        boxes=np.array(
            [[[0.1, 0.2, 0.5, 1.0], [0.0, 0.0, 0.3, 0.3]], [[0.5, 0.25, 1.0, 0.75], [0, 0, 0, 0]]],
            np.float32,
        ),
        scores=np.array([[0.9, 0.4], [0.7, 0.0]], np.float32),
        labels=np.array([[2, 0], [1, 0]], np.int32),
        valid=np.array([[True, True], [True, False]]),
    )
    # Image 0 is 100 high, 200 wide; image 1 is 50 high, 40 wide.
    first, second = postprocess.pixel_detections(detections, [100, 50], [200, 40])
    # yxyx [0.1, 0.2, 0.5, 1.0] → xyxy [0.2·200, 0.1·100, 1.0·200, 0.5·100].
    np.testing.assert_allclose(first[0], [[40, 10, 200, 50], [0, 0, 60, 30]], atol=1e-5)
    np.testing.assert_allclose(first[1], [0.9, 0.4])
    assert first[2].tolist() == [2, 0]
    np.testing.assert_allclose(second[0], [[10, 25, 30, 50]], atol=1e-5)  # the padding is out
    np.testing.assert_allclose(second[1], [0.7])
    assert second[2].tolist() == [1]
    # One size for every image of the batch.
    same = postprocess.pixel_detections(detections, 100, 200)
    np.testing.assert_allclose(same[1][0], [[50, 50, 150, 100]], atol=1e-5)


def test_pixel_detections_name_a_wrong_batch_or_size():
    found = postprocess.detect(np.zeros((2, S, S, C + 5 * B)), num_classes=C, num_boxes=B)
    one_image = jax.tree.map(lambda field: field[0], found)  # as nms gives
    with pytest.raises(ValueError, match=r"boxes \(N, K, 4\).*got boxes \(100, 4\).*field\[None\]"):
        postprocess.pixel_detections(one_image, [100], [100])
    with pytest.raises(ValueError, match=r"heights must have shape \(2,\).*got shape \(3,\)"):
        postprocess.pixel_detections(found, [100, 100, 100], [100, 100])


def test_nms_has_the_defaults_of_detect():
    boxes = jnp.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
    kept = postprocess.nms(boxes, jnp.array([[0.004, 0.0], [0.0, 0.9]]))
    assert kept.valid.shape == (100,)  # MAX_DETECTIONS slots
    assert kept.valid.sum() == 1 and kept.labels[0] == 1  # 0.004 is below the 0.005 kept
    # NMS at IoU 0.45: a box nested in another of its class with IoU 0.475 is suppressed,
    # one with IoU 0.425 is not.
    for width, expected in ((0.475, 1), (0.425, 2)):
        nested = jnp.array([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, width]])
        kept = postprocess.nms(nested, jnp.array([[0.9], [0.8]]))
        assert int(kept.valid.sum()) == expected, width


def test_nms_refuses_logits_for_scores():
    boxes = jnp.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    kwargs = dict(score_threshold=0.5, iou_threshold=0.5, max_detections=4)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*up to 2\.5\. Pass"):
        postprocess.nms(boxes, jnp.array([[2.5, -1.0], [0.3, 0.9]]), **kwargs)
    # A score of exactly 1 is a probability.
    kept = postprocess.nms(boxes, jnp.array([[1.0, 0.0], [0.0, 0.9]]), **kwargs)
    assert kept.valid.sum() == 2


def test_nms_refuses_boxes_in_another_format():
    # [x, y, w, h] boxes of two near-duplicates: as corners they have no area and no IoU,
    # so both were kept, with no suppression and no word.
    xywh = np.array([[100.0, 100.0, 50.0, 50.0], [102.0, 101.0, 50.0, 50.0]])
    scores = np.array([[0.9], [0.8]])
    with pytest.raises(ValueError, match=r"2 have a max below their min.*\[x, y, w, h\]"):
        postprocess.nms(xywh, scores)
    # The same boxes as corners: one suppresses the other.
    corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    assert int(postprocess.nms(corners, scores).valid.sum()) == 1
    # Under jit the boxes are not known: nothing to check, and nothing fails.
    assert int(jax.jit(postprocess.nms)(corners, scores).valid.sum()) == 1


def test_detect_with_its_defaults_finds_what_evaluation_finds():
    # The README's library example calls detect with its defaults: its detections are the
    # ones evaluate.py scores (config.eval's settings).
    outputs = np.random.default_rng(0).uniform(-0.2, 1.2, (2, S, S, C + 5 * B))
    config = default_config()
    config.model.update(grid_size=S, num_classes=C, num_boxes=B)
    expected = postprocess.detect_with_config(outputs, config)
    found = postprocess.detect(outputs, num_classes=C, num_boxes=B)
    assert int(expected.valid.sum()) > 2 * 10  # many candidates, some suppressed or capped
    for name in ("boxes", "scores", "labels", "valid"):
        np.testing.assert_array_equal(getattr(found, name), getattr(expected, name))


def test_config_eval_settings_are_the_ones_detection_applies():
    # Two 2×2-cell boxes of class 0 a shift of t = 0.712 cells apart: IoU (4 - 2t) / (4 + 2t)
    # = 0.475, between the default NMS threshold 0.45 and 0.5. A in cell (1, 1) at the
    # cell's centre scores 1.0 × 0.9; B in cell (1, 2) at x offset 0.212 scores 0.8 × 0.9.
    outputs = np.zeros((1, S, S, C + 5 * B), np.float32)
    outputs[0, 1, 1, :C] = outputs[0, 1, 2, :C] = [0.9, 0.0, 0.0]
    outputs[0, 1, 1, C : C + 5] = [1.0, 0.5, 0.5, 2.0, 2.0]
    outputs[0, 1, 2, C : C + 5] = [0.8, 0.212, 0.5, 2.0, 2.0]
    config = default_config()
    config.model.update(grid_size=S, num_classes=C, num_boxes=B)

    def scores_found(**settings):
        config.eval.update(settings)
        detections = postprocess.detect_with_config(outputs, config)
        return [round(float(score), 4) for score in detections.scores[detections.valid]]

    assert scores_found(iou_threshold=0.45) == [0.9]  # B overlaps A by more: suppressed
    assert scores_found(iou_threshold=0.5) == [0.9, 0.72]
    assert scores_found(score_threshold=0.75) == [0.9]
    assert scores_found(score_threshold=0.005, max_detections=1) == [0.9]


def test_config_pre_nms_top_k_bounds_the_candidates_nms_sees(tmp_path):
    # Every box covers the whole image (2S × 2S cells, clipped) with confidence 1, and every
    # cell scores the classes .9 / .5 / .3: the S·S·B class-0 candidates outrank all others.
    # NMS keeps one box per class, if that class's candidates reach it at all.
    outputs = np.zeros((1, S, S, C + 5 * B), np.float32)
    outputs[..., :C] = [0.9, 0.5, 0.3]
    outputs[..., C:] = np.tile([1.0, 0.5, 0.5, 2 * S, 2 * S], B)
    config = default_config()
    config.model.update(grid_size=S, num_classes=C, num_boxes=B)

    def labels_found(config):
        detections = postprocess.detect_with_config(outputs, config)
        return sorted(np.asarray(detections.labels[detections.valid]).tolist())

    config.eval.pre_nms_top_k = S * S * B
    assert labels_found(config) == [0]
    config.eval.pre_nms_top_k = S * S * B * C
    assert labels_found(config) == [0, 1, 2]
    # A run's config.json from before the key existed gets the default (512 > S·S·B·C).
    saved = config.to_dict()
    del saved["eval"]["pre_nms_top_k"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
    assert labels_found(load_run_config(tmp_path)) == [0, 1, 2]
