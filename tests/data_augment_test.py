"""Augmentation invariants: boxes follow pixels, stay in [0, 1]; colour matches HSV math."""

import ast
import colorsys
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from yolojax.data import augment, pipeline
from yolojax.data.config import default_augment_config


def _seed(value: int) -> tf.Tensor:
    return tf.constant([17, value], tf.int64)


def _window(top, left, height, width, flip=False) -> augment.Window:
    return augment.Window(
        *(tf.constant(v, tf.int32) for v in (top, left, height, width)), tf.constant(flip)
    )


def test_window_boxes_hand_computed():
    # A 100x200 (h x w) image; window rows 20..70, columns -40..160 (reaching off the left).
    window = _window(20, -40, 50, 200)
    box = tf.constant([[0.3, 0.1, 0.5, 0.6]])  # rows 30..50, columns 20..120
    expected = [[(30 - 20) / 50, (20 + 40) / 200, (50 - 20) / 50, (120 + 40) / 200]]
    np.testing.assert_allclose(augment.window_boxes(box, window, 100, 200), expected, atol=1e-6)
    mirrored = augment.window_boxes(box, _window(20, -40, 50, 200, flip=True), 100, 200)
    np.testing.assert_allclose(mirrored, [[0.2, 1 - 0.8, 0.6, 1 - 0.3]], atol=1e-6)


def test_crop_window_fills_outside_with_grey():
    image = tf.fill([4, 6, 3], tf.constant(7, tf.uint8))
    region = augment.crop_window(image, _window(-1, 4, 3, 4)).numpy()
    assert region.shape == (3, 4, 3)
    # Row 0 is above the image; columns 2.. are right of it (image columns 4, 5 are inside).
    inside = np.zeros((3, 4), bool)
    inside[1:, :2] = True
    assert (region[inside] == 7).all() and (region[~inside] == augment.FILL_VALUE).all()


@pytest.mark.parametrize("top, left", [(-10, 0), (9, 0), (0, -12), (0, 11), (-10, 11)])
def test_a_window_wholly_outside_the_image_is_all_grey(top, left):
    # A large shift with a zoom-out can put the whole window beside the image; it used to
    # ask tf.pad for a negative padding and stop training.
    image = tf.fill([4, 6, 3], tf.constant(7, tf.uint8))
    region = augment.crop_window(image, _window(top, left, 5, 5)).numpy()
    assert region.shape == (5, 5, 3) and (region == augment.FILL_VALUE).all()


def test_the_largest_allowed_scale_translate_augments_every_seed():
    config = default_augment_config()
    config.scale_translate = 0.9  # the top of the range validate_data_config allows
    image = tf.fill([100, 120, 3], tf.constant(200, tf.uint8))
    boxes = tf.constant([[0.2, 0.2, 0.6, 0.5]])
    for seed in range(40):  # 0.9 crashed about one seed in nine (seed 14 first)
        out, _, _ = augment.augment(image, boxes, _seed(seed), config, 64)
        assert out.shape == (64, 64, 3) and np.isfinite(out.numpy()).all()


def test_flipping_twice_is_the_identity():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (9, 13, 3)), tf.uint8)
    boxes = tf.constant([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 0.3]])
    flip = _window(0, 0, 9, 13, flip=True)
    once = augment.crop_window(image, flip)
    np.testing.assert_array_equal(once.numpy(), image.numpy()[:, ::-1])
    np.testing.assert_array_equal(augment.crop_window(once, flip), image)
    twice = augment.window_boxes(augment.window_boxes(boxes, flip, 9, 13), flip, 9, 13)
    np.testing.assert_allclose(twice, boxes, atol=1e-6)


@pytest.mark.parametrize("flip", [False, True])
def test_a_voc_box_covers_exactly_its_pixels_mirrored_or_not(flip):
    # VOC's boxes are pixel indices from 1, inclusive: (xmin=1, xmax=10) is columns 1..10,
    # stored by TFDS divided by the image size. Flipped as they were, they landed one pixel
    # off their mirrored pixels; in continuous coordinates they cover them exactly.
    height, width = 40, 50
    xmin, ymin, xmax, ymax = 1, 3, 10, 20
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[ymin - 1 : ymax, xmin - 1 : xmax] = 255
    stored = tf.constant([[ymin / height, xmin / width, ymax / height, xmax / width]])
    boxes = pipeline.continuous_boxes(stored, tf.constant([height, width]))
    window = _window(0, 0, height, width, flip=flip)
    image = augment.crop_window(tf.constant(canvas), window).numpy()[..., 0]
    rows, cols = np.nonzero(image)
    moved = augment.window_boxes(boxes, window, height, width).numpy()[0]
    np.testing.assert_allclose(
        moved * [height, width, height, width],
        [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1],
        atol=1e-4,
    )


@pytest.mark.parametrize("seed", range(6))
def test_box_drawn_on_image_stays_on_its_pixels_after_scale_and_translate(seed):
    height, width, output = 60, 80, 64
    box_pixels = (12, 20, 41, 67)  # rows 12..41, columns 20..67 (exclusive ends)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[box_pixels[0] : box_pixels[2], box_pixels[1] : box_pixels[3]] = 255
    window = augment.sample_window(_seed(seed), height, width, scale_translate=0.2, flip=True)
    warped = tf.image.resize(
        tf.cast(augment.crop_window(tf.constant(canvas), window), tf.float32), [output] * 2
    ).numpy()[..., 0]
    # Lit above the grey fill; bilinear edges make that a quarter output pixel inside.
    rows, cols = np.nonzero(warped > 0.75 * 255)
    box = np.array(box_pixels) / [height, width, height, width]
    moved = (
        augment.window_boxes(tf.constant([box], tf.float32), window, height, width).numpy()[0]
        * output
    )
    # Clipped to the output, the box's edges fall between the first and last lit pixels.
    np.testing.assert_allclose(
        [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1],
        np.clip(moved, 0, output),
        atol=1.0,
    )


def _bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Textbook bilinear resampling, half-pixel centres: output pixel i samples the input at
    (i + 0.5) * n / size - 0.5, clamped to the image, linearly between its neighbours."""
    for axis in (0, 1):
        n = image.shape[axis]
        position = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, n - 1)
        weight = (position - low).reshape([-1, 1, 1] if axis == 0 else [1, -1, 1])
        image = np.take(image, low, axis) * (1 - weight) + np.take(image, high, axis) * weight
    return image


@pytest.mark.parametrize("height, width", [(12, 12), (7, 10), (16, 5)])
def test_resize_is_bilinear_down_to_half_the_size(height, width):
    # Shrinking by up to half (16 -> 8), enlarging (5 -> 8), or both at once.
    image = np.random.default_rng(height).uniform(0, 1, (height, width, 3)).astype(np.float32)
    np.testing.assert_allclose(augment.resize(image, 8), _bilinear(image, 8), atol=1e-5)


def test_resize_below_half_the_size_is_antialiased():
    # A one-pixel checkerboard shrunk 3 times: bilinear samples land on pixel centres and
    # keep the pattern at full contrast; the antialiasing filter averages it to grey.
    checkerboard = (np.indices((24, 24)).sum(0) % 2).astype(np.float32)[..., None]
    assert _bilinear(checkerboard, 8).std() > 0.45  # the aliasing it prevents
    shrunk = augment.resize(checkerboard, 8).numpy()
    assert shrunk.shape == (8, 8, 1) and np.abs(shrunk - 0.5).max() < 0.1


def _random_boxes(*, seed: int, low: float, high: float) -> tf.Tensor:
    """40 normalized yxyx boxes whose corners are drawn uniformly from [low, high)."""
    corners = np.random.default_rng(seed).uniform(low, high, (40, 2, 2))
    return tf.constant(np.concatenate([corners.min(1), corners.max(1)], axis=1), tf.float32)


def test_augmented_boxes_stay_in_the_unit_square_and_kept_ones_have_area():
    boxes = _random_boxes(seed=1, low=0, high=1)
    image = tf.zeros([30, 40, 3], tf.uint8)
    config = default_augment_config()
    config.scale_translate = 0.5  # more boxes pushed off the image than the default
    for seed in range(10):
        _, moved, keep = augment.augment(image, boxes, _seed(seed), config, 32)
        moved, keep = moved.numpy(), keep.numpy()
        assert (moved >= 0).all() and (moved <= 1).all()
        assert (moved[keep, 2] > moved[keep, 0]).all() and (moved[keep, 3] > moved[keep, 1]).all()


def test_clip_boxes_drops_boxes_mostly_outside():
    boxes = tf.constant(
        [[-0.5, 0.2, 0.5, 0.4], [0.9, 0.0, 1.9, 0.1], [1.1, 0.1, 1.3, 0.2], [0.2, 0.2, 0.6, 0.6]]
    )
    clipped, keep = augment.clip_boxes(boxes, min_visible_fraction=0.25)
    # Half inside: kept and clipped; a tenth inside: dropped; outside: dropped; inside: kept.
    np.testing.assert_allclose(clipped[0], [0.0, 0.2, 0.5, 0.4])
    assert keep.numpy().tolist() == [True, False, False, True]


def test_clip_boxes_keeps_exactly_the_minimum_fraction_and_drops_empty_boxes():
    boxes = tf.constant(
        [
            [-0.75, 0.2, 0.25, 0.4],  # exactly a quarter inside: kept ("at least")
            [0.5, 0.2, 0.5, 0.6],  # no area at all: dropped even with no minimum
            [1.1, 0.1, 1.3, 0.2],  # outside: dropped even with no minimum
        ]
    )
    assert augment.clip_boxes(boxes, 0.25)[1].numpy().tolist() == [True, False, False]
    assert augment.clip_boxes(boxes, 0.0)[1].numpy().tolist() == [True, False, False]
    # A box ending on the crop's edge, mapped there with a rounding error inside it (3.4e-8
    # of the crop, as a window's mapping made it): no object, even with no minimum. A sliver
    # of a pixel at 448 px is one.
    edge = tf.constant([[1.0 - 3.4e-8, 0.2, 1.4, 0.6], [1.0 - 0.25 / 448, 0.2, 1.4, 0.6]])
    assert augment.clip_boxes(edge, 0.0)[1].numpy().tolist() == [False, True]


@pytest.mark.parametrize("color_space", ["hsv", "yiq"])
def test_no_colour_jitter_leaves_every_pixel_as_it_was(color_space):
    # configs/shapes.py's factors: colours untouched to the bit (the HSV round trip of a hue
    # shift of 0 moved them by float rounding).
    image = tf.random.stateless_uniform([17, 23, 3], [0, 1])
    same = augment.random_color(
        image, tf.constant([3, 4]), exposure=1.0, saturation=1.0, hue=0.0, color_space=color_space
    )
    np.testing.assert_array_equal(same.numpy(), image.numpy())


def test_colour_factors_are_log_uniform_in_both_directions():
    # A grey pixel: exposure alone scales it (saturation 1, no hue shift), unclipped below 1.
    grey = tf.fill([1, 1, 3], 0.25)
    factors = np.array(
        [
            float(
                augment.random_color(
                    grey, tf.constant([seed, 7]), exposure=2.0, saturation=1.0, hue=0.0
                )[0, 0, 0]
            )
            / 0.25
            for seed in range(200)
        ]
    )
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 2.0 + 1e-6
    # log-uniform on [-log 2, log 2]: mean 0, and about half the factors darken.
    assert abs(np.log(factors).mean()) < 0.1
    assert 0.35 < (factors < 1).mean() < 0.65


def test_saturation_and_hue_draws_span_their_ranges_in_both_directions():
    # RGB (0.5, 0.25, 0.25): hue 0, saturation 0.5, value 0.5 (colorsys). No exposure change.
    red = tf.constant([[[0.5, 0.25, 0.25]]])
    saturations, hue_shifts = [], []
    for seed in range(300):
        rgb = augment.random_color(
            red, tf.constant([seed, 9]), exposure=1.0, saturation=1.5, hue=0.1
        ).numpy()[0, 0]
        hue, saturation, value = colorsys.rgb_to_hsv(*rgb)
        assert value == pytest.approx(0.5, abs=1e-5)
        saturations.append(saturation / 0.5)
        hue_shifts.append((hue + 0.5) % 1.0 - 0.5)  # the shift from hue 0, in [-0.5, 0.5)
    saturations, hue_shifts = np.array(saturations), np.array(hue_shifts)
    # Saturation factor log-uniform in [1/1.5, 1.5]; hue shift uniform in [-0.1, 0.1].
    assert 1 / 1.5 - 1e-4 <= saturations.min() < 0.7 and 1.45 < saturations.max() <= 1.5 + 1e-4
    assert 0.35 < (saturations < 1).mean() < 0.65
    assert -0.1 - 1e-4 <= hue_shifts.min() < -0.09 and 0.09 < hue_shifts.max() <= 0.1 + 1e-4
    assert 0.35 < (hue_shifts < 0).mean() < 0.65


def test_flip_happens_half_the_time():
    mirrors = [
        bool(
            augment.sample_window(
                tf.constant([seed, 3]), 100, 100, scale_translate=0.2, flip=True
            ).flip
        )
        for seed in range(400)
    ]
    assert 0.4 < np.mean(mirrors) < 0.6


def test_same_seed_same_augmentation_and_different_seed_differs():
    image = tf.constant(np.random.default_rng(2).integers(0, 256, (20, 30, 3)), tf.uint8)
    boxes = tf.constant([[0.2, 0.2, 0.7, 0.8]])
    config = default_augment_config()
    first = augment.augment(image, boxes, _seed(5), config, 24)
    again = augment.augment(image, boxes, _seed(5), config, 24)
    other = augment.augment(image, boxes, _seed(6), config, 24)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def _hsv_reference(pixels, saturation, exposure, hue):
    """Darknet's HSV jitter via Python's colorsys: scale S and V (clamped), shift H."""
    out = []
    for r, g, b in pixels:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        out.append(
            colorsys.hsv_to_rgb((h + hue) % 1.0, min(s * saturation, 1.0), min(v * exposure, 1.0))
        )
    return np.array(out)


def _compiled_adjust_color(image, *, saturation, exposure, hue, color_space):
    """adjust_color as random_color runs it (with no normalization)."""
    scale, offset = (tf.constant(values, tf.float32) for values in augment.IDENTITY)
    return augment._compiled_color_then_affine(
        image, saturation, exposure, hue, scale, offset, color_space=color_space, jitter=True
    )


# Varied hues, grey, black, a fully saturated red and a near-black pixel.
PIXELS = np.array(
    [
        [0.8, 0.4, 0.2],
        [0.1, 0.6, 0.3],
        [0.5, 0.5, 0.5],
        [0.9, 0.85, 0.1],
        [0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.2, 0.3, 0.9],
        [0.05, 0.0, 0.02],
    ]
)


@pytest.mark.parametrize(
    "saturation, exposure, hue",
    [(1.4, 0.8, 0.07), (0.7, 1.3, -0.1), (1.5, 1.5, 0.0), (0.67, 0.67, 0.5)],
)
# TensorFlow's kernels, and XLA's compilation of them that training runs (random_color).
@pytest.mark.parametrize("adjust_color", [augment.adjust_color, _compiled_adjust_color])
def test_hsv_colour_matches_colorsys(saturation, exposure, hue, adjust_color):
    jittered = adjust_color(
        tf.constant(PIXELS[None], tf.float32),
        saturation=saturation,
        exposure=exposure,
        hue=hue,
        color_space="hsv",
    )
    expected = _hsv_reference(PIXELS, saturation, exposure, hue)
    np.testing.assert_allclose(jittered.numpy()[0], expected, atol=2e-3)


def test_yiq_colour_approximates_hsv():
    """The fast linear colour change: exposure exact, grey stays grey, hue turns HSV's way."""
    image = tf.constant(PIXELS[None], tf.float32)
    exposure_only = augment.mix_channels(image, augment.color_matrix(1.0, 0.0, 0.8))
    np.testing.assert_allclose(exposure_only[0], PIXELS * 0.8, atol=1e-5)
    grey = augment.mix_channels(image, augment.color_matrix(1.4, 0.05, 1.0)).numpy()[0, 2]
    np.testing.assert_allclose(grey, [0.5, 0.5, 0.5], atol=1e-5)
    for pixel in PIXELS[[0, 1]]:
        shifted = augment.mix_channels(
            tf.constant(pixel[None, None], tf.float32), augment.color_matrix(1.0, 0.05, 1.0)
        ).numpy()[0, 0]
        turn = colorsys.rgb_to_hsv(*shifted)[0] - colorsys.rgb_to_hsv(*pixel)[0]
        assert turn == pytest.approx(0.05, abs=0.02)
    more_saturated = augment.mix_channels(image, augment.color_matrix(1.3, 0.0, 1.0)).numpy()[0]
    for before, after in zip(PIXELS[[0, 1, 3]], more_saturated[[0, 1, 3]], strict=True):
        assert colorsys.rgb_to_hsv(*after)[1] > colorsys.rgb_to_hsv(*before)[1]


def test_gaussian_blur_preserves_constants_and_spreads_an_impulse_by_sigma():
    constant = tf.fill([11, 11, 3], 0.25)
    np.testing.assert_allclose(
        augment.gaussian_blur(constant, tf.constant(1.2), 4), constant, atol=1e-6
    )
    impulse = np.zeros((21, 21, 1), np.float32)
    impulse[10, 10] = 1.0
    blurred = augment.gaussian_blur(tf.constant(impulse), tf.constant(1.5), 6).numpy()[..., 0]
    offsets = np.arange(21) - 10
    row_profile = blurred.sum(axis=1)
    assert np.sqrt((row_profile * offsets**2).sum()) == pytest.approx(1.5, rel=0.02)


def test_each_augmentation_can_be_turned_off():
    config = default_augment_config()
    config.update(
        scale_translate=0.0, flip=False, exposure=1.0, saturation=1.0, hue=0.0, blur_probability=0
    )
    # Square, and resized to its own size: the resize leaves each pixel as it was.
    image = tf.constant(np.random.default_rng(3).integers(0, 256, (16, 16, 3)), tf.uint8)
    boxes = tf.constant([[0.1, 0.2, 0.6, 0.9]])
    for seed in range(20):  # one seed could leave each alone by chance (half don't flip)
        augmented, moved, keep = augment.augment(image, boxes, _seed(seed), config, 16)
        np.testing.assert_allclose(augmented, image.numpy() / 255.0, atol=1e-5)
        np.testing.assert_allclose(moved, boxes, atol=1e-6)
        assert keep.numpy().all()
    # The control: with flip on, some of those seeds mirror image and box, by hand.
    config.flip = True
    flipped = 0
    for seed in range(20):
        augmented, moved, _ = augment.augment(image, boxes, _seed(seed), config, 16)
        if not np.allclose(moved, boxes, atol=1e-6):
            np.testing.assert_allclose(moved, [[0.1, 1 - 0.9, 0.6, 1 - 0.2]], atol=1e-6)
            np.testing.assert_allclose(augmented, image.numpy()[:, ::-1] / 255.0, atol=1e-5)
            flipped += 1
    assert 0 < flipped < 20


def test_min_visible_fraction_decides_which_cut_boxes_are_kept():
    # A box the window cuts is clipped to its edge (a coordinate of exactly 0 or 1). With a
    # minimum of 1 every cut box is dropped; with 0 cut boxes are kept while any is visible.
    boxes = _random_boxes(seed=2, low=0.05, high=0.95)
    image = tf.zeros([30, 40, 3], tf.uint8)
    config = default_augment_config()
    config.scale_translate = 0.5  # windows that cut many boxes
    cut_and_kept = {}
    for fraction in (1.0, 0.0):
        config.min_visible_fraction = fraction
        cut_and_kept[fraction] = 0
        for seed in range(20):
            _, moved, keep = augment.augment(image, boxes, _seed(seed), config, 32)
            moved = moved.numpy()
            on_an_edge = ((moved == 0) | (moved == 1)).any(axis=1)
            cut_and_kept[fraction] += int((on_an_edge & keep.numpy()).sum())
    assert cut_and_kept[1.0] == 0 and cut_and_kept[0.0] > 20, cut_and_kept


def test_the_window_zooms_and_shifts_by_up_to_the_configured_fraction():
    # The paper's "random scaling and translations of up to 20% of the original image size":
    # the window shows the image zoomed by z in [0.8, 1.2] and shifted by t in [-0.2, 0.2]
    # image sizes; its start is 0.5 - (0.5 + t) / z and its extent 1 / z (in image sizes).
    size = 1000
    zooms, shifts = [], []
    for seed in range(400):
        window = augment.sample_window(
            tf.constant([seed, 7]), size, size, scale_translate=0.2, flip=False
        )
        for start, extent in ((window.top, window.height), (window.left, window.width)):
            zoom = size / int(extent)
            zooms.append(zoom)
            shifts.append((0.5 - int(start) / size) * zoom - 0.5)
    assert 0.8 - 1e-3 <= min(zooms) < 0.82 and 1.18 < max(zooms) <= 1.2 + 1e-3
    assert -0.2 - 2e-3 <= min(shifts) < -0.18 and 0.18 < max(shifts) <= 0.2 + 2e-3


def test_blur_happens_to_the_configured_fraction_with_sigma_up_to_its_maximum():
    impulse = np.zeros((21, 21, 1), np.float32)
    impulse[10, 10] = 1.0
    spreads = []
    for seed in range(400):
        blurred = augment.random_blur(
            tf.constant(impulse), tf.constant([seed, 5]), probability=0.1, max_sigma=1.5
        ).numpy()[..., 0]
        if not np.array_equal(blurred, impulse[..., 0]):
            offsets = np.arange(21) - 10  # the impulse's spread along y: about its sigma
            spreads.append(np.sqrt(np.sum(blurred.sum(axis=1) * offsets**2) / blurred.sum()))
    assert 0.05 < len(spreads) / 400 < 0.15  # blur_probability 0.1
    assert max(spreads) <= 1.5 * 1.05 and max(spreads) > 1.0  # sigma up to max_sigma


def test_the_documented_defaults_are_the_configs():
    # docs/data.md's table is where users read the ranges the tests above check; a default
    # changed in one place only would leave it wrong without a word.
    table = Path(__file__).resolve().parents[1] / "docs" / "data.md"
    section = table.read_text().split("## Augmentation (`config.data.augment`")[1].split("\n## ")[0]
    documented = {}
    for row in re.findall(r"^\| (`.+?) \| (`.+?) \|", section, flags=re.MULTILINE):
        fields = re.findall(r"`(\w+)`", row[0])
        values = [ast.literal_eval(value) for value in re.findall(r"`([^`]+)`", row[1])]
        if len(values) == 1:  # one default for several fields
            values *= len(fields)
        documented.update(zip(fields, values, strict=True))
    assert documented == default_augment_config().to_dict()
