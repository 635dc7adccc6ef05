"""Box conversions and IoU against hand-computed values and geometric properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from yolojax import boxes as box_ops


def _random_boxes(draw_array):
    """yxyx boxes with min <= max from an (n, 4) array of corner candidates."""
    low = np.minimum(draw_array[:, :2], draw_array[:, 2:])
    high = np.maximum(draw_array[:, :2], draw_array[:, 2:])
    return np.concatenate([low, high], axis=1)


corner_arrays = arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.just(4)),
    elements=st.floats(0, 1, allow_nan=False, width=32),
)


def test_iou_hand_computed():
    # Unit square vs a square shifted by half its side: intersection 0.5, union 1.5.
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    b = np.array([[0.0, 0.5, 1.0, 1.5], [2.0, 2.0, 3.0, 3.0], [0.25, 0.25, 0.75, 0.75]])
    np.testing.assert_allclose(box_ops.pairwise_iou(a, b), [[1 / 3, 0.0, 0.25]])


def test_area_of_an_inverted_box_is_zero():
    # ymax < ymin, or both sides inverted: no area, neither negative nor positive.
    np.testing.assert_array_equal(
        box_ops.box_area([[0.5, 0.5, 0.2, 0.9], [0.5, 0.5, 0.2, 0.2]]), [0.0, 0.0]
    )


def test_inverted_flags_a_max_below_its_min_on_either_axis():
    boxes = [[0, 0, 2, 2], [0, 0, 0, 0], [3, 0, 1, 2], [0, 3, 2, 1], [50, 10, 10, 50]]
    assert box_ops.inverted(boxes).tolist() == [False, False, True, True, True]
    assert box_ops.inverted(jnp.array(boxes)).tolist() == [False, False, True, True, True]


def test_iou_of_empty_boxes_is_zero_not_nan():
    empty = np.zeros((1, 4))
    assert box_ops.pairwise_iou(empty, empty)[0, 0] == 0.0


@pytest.mark.parametrize("xnp", [np, jnp])
def test_a_nan_box_has_nan_iou_not_zero(xnp):
    # As torchvision's box_iou: an IoU of 0 passed a NaN box off as one overlapping nothing.
    boxes = xnp.asarray([[0.0, 0.0, 1.0, 1.0], [np.nan, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    iou = np.asarray(box_ops.pairwise_iou(boxes, boxes))
    np.testing.assert_array_equal(np.isnan(iou), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert iou[0, 0] == 1.0 and iou[2, 2] == 0.0 and iou[0, 2] == 0.0
    np.testing.assert_array_equal(
        np.isnan(box_ops.elementwise_iou(boxes, boxes[:1])), [False, True, False]
    )
    # The gradient of two empty boxes' IoU stays finite (no 0/0 on the branch not taken).
    empty = jnp.zeros((1, 4))
    gradient = jax.grad(lambda b: box_ops.elementwise_iou(b, empty).sum())(empty)
    assert np.isfinite(gradient).all()


def test_numpy_in_numpy_out_and_jax_in_jax_out():
    a = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
    assert isinstance(box_ops.pairwise_iou(a, a), np.ndarray)
    assert isinstance(box_ops.pairwise_iou(jnp.asarray(a), jnp.asarray(a)), jax.Array)
    jitted = jax.jit(box_ops.elementwise_iou)(jnp.asarray(a), jnp.asarray(a))
    np.testing.assert_allclose(jitted, [1.0])


def test_conversions_hand_computed():
    yxyx = np.array([0.1, 0.2, 0.5, 0.6])
    np.testing.assert_allclose(box_ops.yxyx_to_xyxy(yxyx), [0.2, 0.1, 0.6, 0.5])
    np.testing.assert_allclose(box_ops.yxyx_to_cxcywh(yxyx), [0.4, 0.3, 0.4, 0.4])


def test_an_empty_list_is_no_boxes():
    iou = box_ops.pairwise_iou([], [[0, 0, 1, 1], [0, 0, 2, 2]])
    assert iou.shape == (0, 2)
    assert box_ops.pairwise_iou([[0, 0, 1, 1]], []).shape == (1, 0)


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="boxes1"):
        box_ops.pairwise_iou(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="elementwise_iou"):
        box_ops.pairwise_iou(np.zeros((2, 3, 4)), np.zeros((2, 4)))


@settings(max_examples=60, deadline=None)
@given(corner_arrays, corner_arrays)
def test_iou_symmetric_and_bounded(a, b):
    a, b = _random_boxes(a), _random_boxes(b)
    iou = box_ops.pairwise_iou(a, b)
    assert iou.shape == (len(a), len(b))
    assert np.all((iou >= 0) & (iou <= 1 + 1e-12))
    np.testing.assert_allclose(iou, box_ops.pairwise_iou(b, a).T)
    np.testing.assert_allclose(
        np.diagonal(box_ops.pairwise_iou(a, a[: len(a)])),
        np.where(box_ops.box_area(a) > 0, 1.0, 0.0),
    )


@settings(max_examples=60, deadline=None)
@given(corner_arrays)
def test_conversions_round_trip(corners):
    yxyx = _random_boxes(corners)
    np.testing.assert_allclose(box_ops.xyxy_to_yxyx(box_ops.yxyx_to_xyxy(yxyx)), yxyx)
    np.testing.assert_allclose(
        box_ops.cxcywh_to_yxyx(box_ops.yxyx_to_cxcywh(yxyx)), yxyx, atol=1e-12
    )
    # Area is format independent.
    np.testing.assert_allclose(box_ops.box_area(box_ops.yxyx_to_xyxy(yxyx)), box_ops.box_area(yxyx))


@settings(max_examples=30, deadline=None)
@given(corner_arrays, corner_arrays)
def test_elementwise_matches_diagonal_of_pairwise(a, b):
    a, b = _random_boxes(a), _random_boxes(b)
    n = min(len(a), len(b))
    np.testing.assert_allclose(
        box_ops.elementwise_iou(a[:n], b[:n]), np.diagonal(box_ops.pairwise_iou(a[:n], b[:n]))
    )


@pytest.mark.parametrize("xnp", [np, jnp])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32"])
def test_integer_boxes_are_measured_without_wrapping_around(xnp, dtype):
    def box(*corners):
        return xnp.asarray([corners], dtype)

    assert float(box_ops.pairwise_iou(box(0, 0, 10, 10), box(20, 20, 30, 30))[0, 0]) == 0.0
    overlap = box_ops.elementwise_iou(box(0, 0, 10, 10), box(5, 0, 15, 10))
    np.testing.assert_allclose(overlap, [50 / 150], rtol=1e-6)
    assert box_ops.box_area(box(5, 5, 3, 3)).tolist() == [0]  # inverted
    np.testing.assert_allclose(
        box_ops.yxyx_to_cxcywh(box(10, 20, 250, 200)), [[110, 130, 180, 240]]
    )


@pytest.mark.parametrize("xnp", [np, jnp])
def test_normalized_yxyx_to_pixel_xyxy_and_back(xnp):
    normalized = xnp.asarray([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.5, 0.5]], xnp.float32)
    # One 200 × 300 (height × width) image, then a size per box.
    np.testing.assert_allclose(
        box_ops.normalized_yxyx_to_pixel_xyxy(normalized, 200, 300),
        [[150, 50, 300, 150], [0, 0, 150, 100]],
    )
    heights, widths = xnp.asarray([200, 40]), xnp.asarray([300, 60])
    pixels = box_ops.normalized_yxyx_to_pixel_xyxy(normalized, heights, widths)
    np.testing.assert_allclose(pixels, [[150, 50, 300, 150], [0, 0, 30, 20]])
    np.testing.assert_allclose(
        box_ops.pixel_xyxy_to_normalized_yxyx(pixels, heights, widths), normalized
    )


def test_a_size_per_image_of_a_batch_of_boxes_is_named_and_a_zero_size_refused():
    boxes = np.tile([0.0, 0.0, 0.5, 0.25], (2, 3, 1))  # (N=2 images, M=3 boxes, 4)
    heights, widths = np.array([100, 40]), np.array([200, 80])
    with pytest.raises(ValueError, match=r"pass heights\[:, None\] and widths\[:, None\]"):
        box_ops.normalized_yxyx_to_pixel_xyxy(boxes, heights, widths)
    # As many boxes an image as images: (N,) sizes broadcast over each image's boxes, which
    # came out scaled by every image's size in turn, without an error.
    with pytest.raises(ValueError, match=r"pass heights\[:, None\] and widths\[:, None\]"):
        box_ops.normalized_yxyx_to_pixel_xyxy(boxes[:, :2], heights, widths)
    with pytest.raises(ValueError, match=r"pass heights\[:, None\] and widths\[:, None\]"):
        box_ops.pixel_xyxy_to_normalized_yxyx(jnp.asarray(boxes[:, :2]), heights, 80)
    with pytest.raises(ValueError, match=r"must broadcast to the boxes' \(2, 1\)"):  # no (2, 2)
        box_ops.normalized_yxyx_to_pixel_xyxy(boxes[:, :1], heights[:, None, None], 80)
    pixels = box_ops.normalized_yxyx_to_pixel_xyxy(boxes, heights[:, None], widths[:, None])
    # [ymin, xmin, ymax, xmax] [0, 0, .5, .25] of 100 × 200 → xyxy [0, 0, 50, 50]; of 40 × 80
    # → [0, 0, 20, 20].
    np.testing.assert_allclose(pixels[:, 0], [[0, 0, 50, 50], [0, 0, 20, 20]])
    with pytest.raises(ValueError, match="must be positive image sizes in pixels; got height 0"):
        box_ops.pixel_xyxy_to_normalized_yxyx([[1, 2, 3, 4]], 0, 10)  # was inf
    # With JAX boxes, or a NaN size, these came out inf and NaN too.
    with pytest.raises(ValueError, match="must be positive image sizes in pixels; got height 0"):
        box_ops.pixel_xyxy_to_normalized_yxyx(jnp.array([[1.0, 2, 3, 4]]), 0, 10)
    with pytest.raises(ValueError, match="must be positive image sizes in pixels; got width nan"):
        box_ops.normalized_yxyx_to_pixel_xyxy(jnp.array([[0.1, 0.2, 0.3, 0.4]]), 10, np.nan)
    # Traced sizes (under jit) are not known: converted as given.
    convert = jax.jit(box_ops.pixel_xyxy_to_normalized_yxyx)
    np.testing.assert_allclose(
        convert(jnp.array([[1.0, 2, 3, 4]]), 10, 20), [[0.2, 0.05, 0.4, 0.15]]
    )
