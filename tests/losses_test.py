"""The YOLOv1 loss against a value worked out by hand on a 2×2 grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax import losses, targets

# A 2×2 grid, C = 2 classes, B = 2 boxes. Prediction channels per cell:
# [p0, p1, conf0, x0, y0, w0, h0, conf1, x1, y1, w1, h1].
S, C, B = 2, 2, 2


def _one_object_target(box_yxyx, label):
    """The (S, S, C + 5) target grid of one object."""
    return np.asarray(
        targets.encode(
            np.array([box_yxyx], np.float32),
            np.array([label]),
            np.array([True]),
            grid_size=S,
            num_classes=C,
        )
    )


def _hand_case():
    """One object of class 1 in cell (row 0, col 1), centred, exactly one cell in size."""
    target = _one_object_target([0.0, 0.5, 0.5, 1.0], 1)
    pred = np.zeros((S, S, C + 5 * B), np.float32)
    # Object cell. Box 0: x∈[0.375, 0.625], y∈[0, 1] → IoU with the unit cell box 0.25.
    # Box 1: x∈[-0.25, 0.75], y∈[0, 1] → intersection 0.75, union 1.25, IoU 0.6: responsible.
    pred[0, 1] = [0.2, 0.7, 0.6, 0.5, 0.5, 0.25, 1.0, 0.3, 0.25, 0.5, 1.0, 1.0]
    # Empty cells: only confidences matter (no-object term); class scores must be ignored.
    pred[0, 0, :3] = [0.5, 0.5, 0.2]
    pred[1, 1, 7] = -0.4
    pred[1, 0, 3:7] = [0.9, 0.9, 3.0, 3.0]  # coordinates of empty cells are ignored
    return pred[None], target[None]


# Worked by hand from the case above:
#   coord  = 5 · [(0.25 - 0.5)² + 0² + (√1 - √1)² + (√1 - √1)²] = 5 · 0.0625 = 0.3125
#   object = (0.3 - IoU 0.6)² = 0.09            (rescore=False: (0.3 - 1)² = 0.49)
#   noobj  = 0.5 · (0.6² + 0.2² + 0.4²) = 0.28  (only empty cells: 0.5 · (0.2² + 0.4²) = 0.1)
#   class  = (0.2 - 0)² + (0.7 - 1)² = 0.13
HAND = {"coord": 0.3125, "object": 0.09, "noobj": 0.28, "class": 0.13}


def test_loss_matches_hand_computation():
    pred, target = _hand_case()
    loss, metrics = losses.yolo_loss(pred, target, num_classes=C, num_boxes=B)
    for name, value in HAND.items():
        assert float(metrics[name]) == pytest.approx(value, abs=1e-5), name
    assert float(loss) == pytest.approx(sum(HAND.values()), abs=1e-5)
    assert float(metrics["iou"]) == pytest.approx(0.6, abs=1e-6)


def test_loss_variants_hand_computed():
    pred, target = _hand_case()
    _, no_rescore = losses.yolo_loss(pred, target, num_classes=C, rescore=False)
    assert float(no_rescore["object"]) == pytest.approx(0.49, abs=1e-5)
    _, empty_cells_only = losses.yolo_loss(pred, target, num_classes=C, noobj_on_unassigned=False)
    assert float(empty_cells_only["noobj"]) == pytest.approx(0.1, abs=1e-5)
    _, weighted = losses.yolo_loss(pred, target, num_classes=C, lambda_coord=1.0, lambda_noobj=1.0)
    assert float(weighted["coord"]) == pytest.approx(0.0625, abs=1e-5)
    assert float(weighted["noobj"]) == pytest.approx(0.56, abs=1e-5)


def test_loss_is_a_mean_over_images():
    pred, target = _hand_case()
    empty_pred = np.zeros_like(pred)
    empty_target = np.zeros_like(target)
    loss, metrics = losses.yolo_loss(
        np.concatenate([pred, empty_pred]), np.concatenate([target, empty_target]), num_classes=C
    )
    assert float(loss) == pytest.approx(sum(HAND.values()) / 2, abs=1e-5)
    # The iou metric is a mean over objects, not images: the one object's 0.6, not 0.3.
    assert float(metrics["iou"]) == pytest.approx(0.6, abs=1e-5)


def test_responsible_tie_goes_to_the_lower_index():
    pred, target = _hand_case()
    pred[0, 0, 1, 7:] = pred[0, 0, 1, 2:7]  # box 1 := box 0: equal IoU 0.25
    pred[0, 0, 1, 7] = 0.9  # distinguishable confidence on box 1
    _, metrics = losses.yolo_loss(pred, target, num_classes=C)
    # Box 0 responsible → object (0.6 - 0.25)²; box 1 goes to no-object: 0.5 · (0.9² + 0.2² + 0.4²)
    assert float(metrics["object"]) == pytest.approx(0.35**2, abs=1e-5)
    assert float(metrics["noobj"]) == pytest.approx(0.5 * (0.81 + 0.04 + 0.16), abs=1e-5)


def test_with_no_overlap_box_0_is_responsible_even_when_another_is_nearer():
    pred, target = _hand_case()
    # Neither box meets the target (x, y, w, h) = (0.5, 0.5, 1, 1), which spans [0, 1]².
    # Box 0: y∈[-1, -0.4], squared distance 1.2² + 0.4² = 1.6; box 1: x∈[1.3, 1.7], 1² + 0.6²
    # = 1.36. Box 0 is responsible all the same (Darknet would take the nearer, box 1: see
    # docs/architecture.md for why yolojax does not).
    pred[0, 0, 1, 3:7] = [0.5, -0.7, 1.0, 0.6]
    pred[0, 0, 1, 8:12] = [1.5, 0.5, 0.4, 1.0]
    _, metrics = losses.yolo_loss(pred, target, num_classes=C)
    assert float(metrics["coord"]) == pytest.approx(5 * (1.2**2 + (0.6**0.5 - 1) ** 2), abs=1e-5)
    assert float(metrics["object"]) == pytest.approx(0.6**2, abs=1e-6)  # target: IoU 0
    assert float(metrics["noobj"]) == pytest.approx(0.5 * (0.3**2 + 0.2**2 + 0.4**2), abs=1e-6)
    assert float(metrics["iou"]) == 0.0


@pytest.mark.parametrize("size", [0.0, -0.5, 1e-3])
def test_gradient_grows_non_positive_and_tiny_sizes(size):
    pred, target = _hand_case()
    # w, h of both boxes: empty or tiny boxes inside the 1-cell target tie on IoU, so box 0
    # (the lower index) is responsible.
    pred[0, 0, 1, 5:7] = size
    pred[0, 0, 1, 10:12] = size
    grads = jax.grad(lambda p: losses.yolo_loss(p, target, num_classes=C)[0])(jnp.asarray(pred))
    assert np.all(np.isfinite(grads))
    # Descent raises w and h toward the target: the gradient is negative, also at exactly 0.
    assert np.all(np.asarray(grads[0, 0, 1, 5:7]) < 0)


def test_gradient_pushes_the_confidence_toward_iou_not_through_it():
    pred, target = _hand_case()
    grads = jax.grad(lambda p: losses.yolo_loss(p, target, num_classes=C)[0])(jnp.asarray(pred))
    # d/dconf1 (conf1 - 0.6)² = 2 · (0.3 - 0.6) = -0.6 exactly: the IoU target is a constant.
    assert float(grads[0, 0, 1, 7]) == pytest.approx(-0.6, abs=1e-5)


def test_mismatched_shapes_name_the_problem():
    pred, target = _hand_case()
    with pytest.raises(ValueError, match="targets"):
        losses.yolo_loss(pred, target[..., :-1], num_classes=C)
    with pytest.raises(ValueError, match="C \\+ 5B"):
        losses.yolo_loss(pred, target, num_classes=C, num_boxes=3)
    # The arguments swapped: the targets' channels are a model's, and the message says so.
    with pytest.raises(ValueError, match=r"Swapped\? yolo_loss takes the model's outputs first"):
        losses.yolo_loss(target, pred, num_classes=C)


def test_hand_made_targets_that_break_the_contract_are_refused_outside_jit():
    # Each gave a loss without an error: objectness 2 a negative one, a negative size NaN.
    pred, target = _hand_case()
    cases = (
        ((0, 0, 1, C), 2.0, r"objectness \(channel C = 2\) must be bool or 0/1"),
        ((0, 0, 1, C + 3), -1.0, r"w and h \(channels C \+ 3 and C \+ 4\) must be at least 0"),
        ((0, 1, 1, C + 1), np.nan, "targets must be finite"),
    )
    for index, value, message in cases:
        bad = target.copy()
        bad[index] = value
        with pytest.raises(ValueError, match=message + ".*Make targets with yolojax.encode_batch"):
            losses.yolo_loss(pred, bad, num_classes=C)
    # Under jit the values are not known: the loss is computed as given.
    bad = target.copy()
    bad[0, 0, 1, C] = 2.0
    assert np.isfinite(jax.jit(lambda t: losses.yolo_loss(pred, t, num_classes=C)[0])(bad))


def test_a_negative_weight_is_refused_as_the_configs_is():
    # A negative weight rewards the error it weighs: the config refused it, the call did not.
    pred, target = _hand_case()
    for weight in ("lambda_coord", "lambda_noobj"):
        with pytest.raises(ValueError, match=rf"^{weight} must be a finite number >= 0; got -1"):
            losses.yolo_loss(pred, target, num_classes=C, **{weight: -1.0})
        for scalar in (np.float32(-1), jnp.float32(-1), True, None, "5"):  # known values
            with pytest.raises(ValueError, match=rf"^{weight} must be a finite number >= 0"):
                losses.yolo_loss(pred, target, num_classes=C, **{weight: scalar})
    # A traced weight (a sweep under vmap) is taken as given.
    weights = jnp.array([0.0, 5.0])
    swept = jax.vmap(lambda w: losses.yolo_loss(pred, target, num_classes=C, lambda_coord=w)[0])
    np.testing.assert_allclose(swept(weights)[1] - swept(weights)[0], HAND["coord"], rtol=1e-5)


def _sizes_case():
    """An object off the diagonal and off-centre, with width ≠ height, and predicted sizes
    ≠ 1, so that square roots, x/y order and the IoU's gradient all show.

    Target: class 0, yxyx [0.5, 0, 1, 0.25] → cell (row 1, col 0), centre offset (x .25,
    y .5), size w .5 × h 1 cells. Box 0 predicts (x .35, y .3, w 2, h 1), conf .4: in the
    cell frame x∈[-.65, 1.35], y∈[-.2, .8] against the target's x∈[0, .5], y∈[0, 1]:
    intersection .5 × .8 = .4, union 2 + .5 - .4 = 2.1, IoU 4/21: responsible. Box 1
    (x .9, y .1, w .1, h .1, conf .7) does not touch the target: IoU 0.
    """
    target = _one_object_target([0.5, 0.0, 1.0, 0.25], 0)
    pred = np.zeros((S, S, C + 5 * B), np.float32)
    pred[1, 0] = [0.6, 0.1, 0.4, 0.35, 0.3, 2.0, 1.0, 0.7, 0.9, 0.1, 0.1, 0.1]
    return jnp.asarray(pred[None]), jnp.asarray(target[None])


def test_loss_hand_computed_with_square_roots_and_off_diagonal_cell():
    pred, target = _sizes_case()
    _, metrics = losses.yolo_loss(pred, target, num_classes=C, num_boxes=B)
    # coord  = 5 · [(.35 - .25)² + (.3 - .5)² + (√2 - √.5)² + (√1 - √1)²] = 5 · (.05 + .5)
    # object = (.4 - 4/21)²;  noobj = .5 · .7²;  class = (.6 - 1)² + .1²
    expected = {"coord": 2.75, "object": (0.4 - 4 / 21) ** 2, "noobj": 0.245, "class": 0.17}
    for name, value in expected.items():
        assert float(metrics[name]) == pytest.approx(value, abs=1e-5), name
    assert float(metrics["iou"]) == pytest.approx(4 / 21, abs=1e-6)


def test_size_gradient_comes_from_the_coordinate_term_alone():
    pred, target = _sizes_case()
    grads = jax.grad(lambda p: losses.yolo_loss(p, target, num_classes=C)[0])(pred)
    # d/dw 5 (√w - √.5)² = 5 (√w - √.5) / √w = 5 · .5 at w = 2. The IoU moves with w and h
    # too, but the confidence's target takes no gradient: d/dh is 0 since √h = √1 already.
    assert float(grads[0, 1, 0, 5]) == pytest.approx(2.5, abs=1e-4)
    assert float(grads[0, 1, 0, 6]) == pytest.approx(0.0, abs=1e-4)


def test_signed_sqrt_is_the_square_root_with_the_sign_kept():
    values = losses.signed_sqrt(jnp.array([4.0, 0.25, 0.0, -0.25, -4.0]))
    np.testing.assert_allclose(values, [2.0, 0.5, 0.0, -0.5, -2.0], atol=1e-5)


def test_iou_metric_is_zero_without_objects():
    pred, target = _hand_case()
    _, metrics = losses.yolo_loss(pred, np.zeros_like(target), num_classes=C)
    assert float(metrics["iou"]) == 0.0
