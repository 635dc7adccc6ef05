"""Target encoding against hand-worked grids."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax import targets

C = 3  # classes in these tests; the grid layout is [class one-hot (3), obj, x, y, w, h]


def _encode(boxes, labels, mask=None, grid_size=4):
    """``mask`` None: left to encode's default, every box real."""
    boxes = np.asarray(boxes, np.float32)
    return np.asarray(
        targets.encode(boxes, np.asarray(labels), mask, grid_size=grid_size, num_classes=C)
    )


def test_single_box_hand_computed():
    # yxyx [0.1, 0.2, 0.5, 0.6]: centre (x=0.4, y=0.3) → ×4 = (1.6, 1.2): row 1, col 1,
    # offsets (0.6, 0.2); size 0.4 × 4 = 1.6 cells each way.
    grid = _encode([[0.1, 0.2, 0.5, 0.6]], [2])
    assert grid.shape == (4, 4, C + 5)
    np.testing.assert_allclose(grid[1, 1], [0, 0, 1, 1, 0.6, 0.2, 1.6, 1.6], atol=1e-6)
    assert grid.sum() == pytest.approx(grid[1, 1].sum())  # every other cell is empty


def test_box_off_the_diagonal_with_width_not_height():
    # yxyx [0.05, 0.5, 0.15, 0.95]: centre (x=0.725, y=0.1) → ×4 = (2.9, 0.4): row 0, col 2,
    # offsets (x 0.9, y 0.4); size w 0.45 × 4 = 1.8, h 0.1 × 4 = 0.4 cells.
    grid = _encode([[0.05, 0.5, 0.15, 0.95]], [0])
    np.testing.assert_allclose(grid[0, 2], [1, 0, 0, 1, 0.9, 0.4, 1.8, 0.4], atol=1e-6)
    assert grid.sum() == pytest.approx(grid[0, 2].sum())


def test_two_centres_in_one_cell_keep_the_larger_box_whatever_the_order():
    small = [0.30, 0.30, 0.40, 0.40]  # centre (0.35, 0.35) → cell (1, 1)
    large = [0.20, 0.20, 0.50, 0.50]  # same centre cell, 9× the area
    for boxes, labels in (([small, large], [0, 1]), ([large, small], [1, 0])):
        grid = _encode(boxes, labels)
        np.testing.assert_allclose(grid[1, 1, :C], [0, 1, 0])
        np.testing.assert_allclose(grid[1, 1, C + 3 :], [1.2, 1.2], atol=1e-6)


def test_the_larger_area_wins_not_the_longer_sides():
    strip = [0.1, 0.3625, 0.6, 0.3875]  # 0.5 × 0.025: area 0.0125, sides 0.525
    square = [0.25, 0.275, 0.45, 0.475]  # 0.2 × 0.2: area 0.04, sides 0.4; both in cell (1, 1)
    for boxes, labels in (([strip, square], [0, 1]), ([square, strip], [1, 0])):
        np.testing.assert_allclose(_encode(boxes, labels)[1, 1, :C], [0, 1, 0])


def test_equal_area_tie_goes_to_the_lower_index():
    a = [0.25, 0.25, 0.375, 0.375]  # exactly representable: the areas are exactly equal
    b = [0.3125, 0.3125, 0.4375, 0.4375]  # same size, same cell (1, 1)
    np.testing.assert_allclose(_encode([a, b], [0, 1])[1, 1, :C], [1, 0, 0])
    np.testing.assert_allclose(_encode([b, a], [0, 1])[1, 1, :C], [1, 0, 0])


def test_padding_and_degenerate_boxes_are_ignored():
    real = [0.1, 0.1, 0.2, 0.2]
    zero_width = [0.6, 0.6, 0.9, 0.6]
    zero_height = [0.6, 0.1, 0.6, 0.4]
    padded = [0.6, 0.6, 0.9, 0.9]
    grid = _encode(
        [real, zero_width, zero_height, padded], [0, 1, 1, 2], mask=[True, True, True, False]
    )
    assert np.count_nonzero(grid[..., C]) == 1
    assert grid[0, 0, C] == 1


def test_a_larger_padded_box_in_the_same_cell_does_not_replace_the_real_one():
    # Real: yxyx [0.3, 0.3, 0.4, 0.4], centre (0.35, 0.35) → ×4 = (1.4, 1.4): cell (1, 1),
    # offsets (0.4, 0.4), size 0.1 × 4 = 0.4 cells. The padding (mask False) is 9× larger
    # and centred in the same cell: ignored, not the cell's box.
    real, padded = [0.3, 0.3, 0.4, 0.4], [0.2, 0.2, 0.5, 0.5]
    for boxes, labels, mask in (
        ([real, padded], [0, 1], [True, False]),
        ([padded, real], [1, 0], [False, True]),
    ):
        grid = _encode(boxes, labels, np.array(mask))
        np.testing.assert_allclose(grid[1, 1], [1, 0, 0, 1, 0.4, 0.4, 0.4, 0.4], atol=1e-6)
        assert grid.sum() == pytest.approx(grid[1, 1].sum())


def test_centre_on_the_far_edge_belongs_to_the_last_cell():
    # Only a box past the edge centres on 1.0: under jit, where values go unchecked.
    encode = jax.jit(functools.partial(targets.encode, grid_size=4, num_classes=C))
    grid = encode(jnp.array([[0.8, 0.8, 1.2, 1.2]]), jnp.array([0]), jnp.array([True]))
    assert grid[3, 3, C] == 1
    np.testing.assert_allclose(grid[3, 3, C + 1 : C + 3], [1.0, 1.0])


def test_batch_encoding_matches_per_image_encoding_under_jit():
    rng = np.random.default_rng(0)
    low = rng.uniform(0, 0.6, (3, 5, 2))
    boxes = np.concatenate([low, low + rng.uniform(0.05, 0.4, (3, 5, 2))], -1).astype(np.float32)
    labels = rng.integers(0, C, (3, 5))
    mask = rng.uniform(size=(3, 5)) > 0.3
    batched = jax.jit(
        lambda b, lab, m: targets.encode_batch(b, lab, m, grid_size=4, num_classes=C)
    )(boxes, labels, mask)
    for i in range(3):
        np.testing.assert_allclose(batched[i], _encode(boxes[i], labels[i], mask[i]), atol=1e-6)
    # Without a mask every box is real, as in encode.
    unmasked = targets.encode_batch(boxes, labels, grid_size=4, num_classes=C)
    for i in range(3):
        np.testing.assert_allclose(unmasked[i], _encode(boxes[i], labels[i]), atol=1e-6)


def test_an_image_without_boxes_encodes_to_an_empty_grid():
    kwargs = dict(grid_size=4, num_classes=3)
    grid = targets.encode(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0, bool), **kwargs)
    assert grid.shape == (4, 4, 8) and not np.any(grid)
    batch = targets.encode_batch(
        np.zeros((2, 0, 4)), np.zeros((2, 0), int), np.zeros((2, 0), bool), **kwargs
    )
    assert batch.shape == (2, 4, 4, 8) and not np.any(batch)
    # Plain empty lists, as for an image without boxes in VOCEvaluator.add: [] has no type,
    # and was refused as float class ids.
    assert not np.any(targets.encode([], [], grid_size=4, num_classes=3))


def test_bad_shapes_raise_before_tracing():
    with pytest.raises(ValueError, match="boxes"):
        targets.encode(
            jnp.zeros((5, 3)), jnp.zeros(5, int), jnp.ones(5, bool), grid_size=7, num_classes=C
        )
    with pytest.raises(ValueError, match="labels"):
        targets.encode(
            jnp.zeros((5, 4)), jnp.zeros(4, int), jnp.ones(5, bool), grid_size=7, num_classes=C
        )
    with pytest.raises(ValueError, match="grid_size"):
        targets.encode(
            jnp.zeros((5, 4)), jnp.zeros(5, int), jnp.ones(5, bool), grid_size=0, num_classes=C
        )
    # The fix each mistake needs: one box not in a list; a batch, for encode_batch.
    with pytest.raises(ValueError, match=r"got \(4,\)\. For one box, pass \[\[ymin, xmin"):
        targets.encode([0.1, 0.1, 0.5, 0.5], [0], grid_size=7, num_classes=C)
    with pytest.raises(ValueError, match=r"got \(2, 1, 4\)\. For a batch .* use encode_batch"):
        targets.encode(jnp.zeros((2, 1, 4)), jnp.zeros((2, 1), int), grid_size=7, num_classes=C)
    ragged = [[[0.1, 0.1, 0.5, 0.5]], [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]]]
    with pytest.raises(ValueError, match=r"^boxes must be an array of boxes, each image's padded"):
        targets.encode_batch(ragged, [[0], [0, 1]], grid_size=7, num_classes=C)


@pytest.mark.parametrize(
    "box, problem, advice",
    [
        ([11.2, 22.4, 67.2, 78.4], "outside", "pixel_xyxy_to_normalized"),  # a 112-px image's
        ([0.5, 0.5, 0.2, 0.3], "max below its min", "cxcywh_to_yxyx"),  # [x, y, w, h]
        ([0.1, np.nan, 0.2, 0.3], "not finite", ""),
    ],
)
def test_boxes_in_another_format_are_refused_where_their_values_are_known(box, problem, advice):
    boxes = np.array([[0.1, 0.1, 0.2, 0.2], box], np.float32)
    with pytest.raises(ValueError, match=f"normalized .* {problem}.*, such as .*{advice}") as error:
        _encode(boxes, [0, 1])
    if not advice:  # a NaN box is none of the formats: no conversion would help
        assert "convert" not in str(error.value)
    with pytest.raises(ValueError, match=problem):
        targets.encode_batch(
            boxes[None], np.array([[0, 1]]), np.ones((1, 2), bool), grid_size=4, num_classes=C
        )
    # As padding (mask False) the same values are ignored.
    np.testing.assert_array_equal(_encode(boxes, [0, 1], [True, False]), _encode(boxes[:1], [0]))


def test_a_pipeline_batch_with_its_device_axis_is_named_as_such():
    boxes, labels = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3), np.int32)
    with pytest.raises(ValueError, match=r"per_device, \.\.\.\): pass boxes\[0\] \(the first"):
        targets.encode_batch(boxes, labels, grid_size=4, num_classes=C)
    grids = targets.encode_batch(boxes[0], labels[0], grid_size=4, num_classes=C)
    assert grids.shape == (2, 4, 4, C + 5)


def test_class_ids_outside_the_classes_are_refused_unless_padding():
    boxes = [[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]]
    for label in (C, -1):
        with pytest.raises(ValueError, match=rf"class ids in \[0, {C}\).*\[{label}\]"):
            _encode(boxes, [0, label])
    np.testing.assert_array_equal(_encode(boxes, [0, -1], [True, False]), _encode(boxes[:1], [0]))
