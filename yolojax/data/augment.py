"""Detection augmentation for one example, in TensorFlow, driven by stateless random seeds.

Geometry (scale, translation and horizontal flip) picks an integer pixel window of the input,
possibly reaching beyond it (the outside is filled with grey), resized to the model input
(`resize`: bilinear, half-pixel centres, antialiased below half the size); colour comes
after. Boxes are mapped through the same window, so they follow the pixels exactly.
Coordinates are normalized and continuous: pixel `i` of an `n`-pixel axis spans
`[i / n, (i + 1) / n]`.

Randomness comes only from the `seed` arguments (shape [2] int32/int64, as taken by
`tf.random.stateless_*`), so an example's augmentation is a pure function of its seed: this is
what makes a resumed training run see exactly the batches of an uninterrupted one.
"""

import math
from typing import NamedTuple

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import tensorflow as tf

from yolojax.data.config import blur_radius

# Grey shown where scaling down or translating uncovers the outside of the image (uint8).
FILL_VALUE = 128


class Window(NamedTuple):
    """An input region, in whole pixels (int32 scalars; may extend beyond the image)."""

    top: tf.Tensor
    left: tf.Tensor
    height: tf.Tensor
    width: tf.Tensor
    flip: tf.Tensor  # bool: mirror the region horizontally


def sample_window(
    seed: tf.Tensor,
    image_height: tf.Tensor,
    image_width: tf.Tensor,
    *,
    scale_translate: float,
    flip: bool,
) -> Window:
    """Random zoom by z in [1 - st, 1 + st] about the centre, shift by up to st, maybe a flip.

    Args:
      seed: [2] integer stateless seed.
      image_height, image_width: int32 scalars, the input size.
      scale_translate: the paper's 0.2: scale and translation "up to 20% of the image size".
      flip: whether to mirror horizontally with probability 0.5.

    Returns:
      The window whose resize shows the image zoomed by z and shifted by (ty, tx) image
      sizes: output point v shows input point 0.5 + (v - 0.5 - t) / z, rounded to pixels.
    """
    zoom_seed, shift_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    zoom = tf.random.stateless_uniform([], zoom_seed, 1.0 - scale_translate, 1.0 + scale_translate)
    shift = tf.random.stateless_uniform([2], shift_seed, -scale_translate, scale_translate)
    size = tf.cast(tf.stack([image_height, image_width]), tf.float32)
    start = tf.cast(tf.round((0.5 - (0.5 + shift) / zoom) * size), tf.int32)
    extent = tf.maximum(tf.cast(tf.round(size / zoom), tf.int32), 1)
    mirror = tf.random.stateless_uniform([], flip_seed) < 0.5 if flip else tf.constant(False)
    return Window(start[0], start[1], extent[0], extent[1], mirror)


def _overlap(start, extent, size):
    """Along one axis, a window ``[start, start + extent)`` over an image ``[0, size)``:
    ``(first image pixel, pixels inside, fill before, fill after)``. A window wholly outside
    the image (a large shift and zoom-out) is all fill, not a negative padding."""
    before = tf.clip_by_value(-start, 0, extent)
    inside = tf.maximum(0, tf.minimum(start + extent, size) - tf.maximum(start, 0))
    return tf.clip_by_value(start, 0, size), inside, before, extent - before - inside


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """(h, w, C) float image -> (size, size, C): bilinear, half-pixel centres; antialiased
    where a side shrinks to less than half (h or w > 2 * size).

    Bilinear sampling reads every pixel of an image shrunk down to half its size; below,
    it skips some (a 4032-pixel photo shrunk to 448 would be sampled one pixel in nine, and
    fine lines would vanish), which the antialiasing filter prevents. Above half, that
    filter (`tf.image.resize`'s ScaleAndTranslate) would cost 4-7 times the bilinear resize
    for little change: VOC images at 448 make 1.8 times the training batches a second
    without it, 2.3 times the evaluation ones (BENCHMARKS.md, "Input pipeline"). Enlarging,
    the two are the same.
    """
    height, width = tf.unstack(tf.shape(image)[:2])
    return tf.cond(
        tf.maximum(height, width) > 2 * size,
        lambda: tf.image.resize(image, [size, size], antialias=True),
        lambda: tf.image.resize(image, [size, size]),
    )


def crop_window(image: tf.Tensor, window: Window) -> tf.Tensor:
    """The (window.height, window.width, C) region of a (H, W, C) uint8 image, grey outside."""
    rows = _overlap(window.top, window.height, tf.shape(image)[0])
    cols = _overlap(window.left, window.width, tf.shape(image)[1])
    inside = image[rows[0] : rows[0] + rows[1], cols[0] : cols[0] + cols[1]]
    outside = [[rows[2], rows[3]], [cols[2], cols[3]], [0, 0]]
    region = tf.pad(inside, outside, constant_values=FILL_VALUE)
    return tf.cond(window.flip, lambda: tf.reverse(region, axis=[1]), lambda: region)


def window_boxes(
    boxes: tf.Tensor, window: Window, image_height: tf.Tensor, image_width: tf.Tensor
) -> tf.Tensor:
    """Maps (N, 4) normalized yxyx boxes of the image into the window's normalized frame.

    The result is unclipped: coordinates outside [0, 1] lie outside the window.
    """
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)

    def to_window(coordinate, size, start, extent):
        pixels = coordinate * tf.cast(size, tf.float32) - tf.cast(start, tf.float32)
        return pixels / tf.cast(extent, tf.float32)

    ymin, ymax = (to_window(y, image_height, window.top, window.height) for y in (ymin, ymax))
    xmin, xmax = (to_window(x, image_width, window.left, window.width) for x in (xmin, xmax))
    # Mirroring maps x to 1 - x and swaps min and max.
    xmin, xmax = (
        tf.where(window.flip, 1.0 - xmax, xmin),
        tf.where(window.flip, 1.0 - xmin, xmax),
    )
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


# The least side a box keeps inside the image to be an object (normalized; a thousandth of a
# pixel at 1,000 px): a box whose edge lay on the crop's edge can end a rounding error, about
# 1e-8, inside it, a sliver kept with no minimum fraction.
MIN_VISIBLE_SIDE = 1e-6


def clip_boxes(boxes: tf.Tensor, min_visible_fraction: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Clips (N, 4) yxyx boxes to [0, 1]; keeps those with enough of their area left.

    Returns:
      (clipped boxes (N, 4), keep (N,) bool): keep is False for boxes of which less than
      `min_visible_fraction` of the area (or no area at all: a side under
      `MIN_VISIBLE_SIDE`) lies inside the image.
    """
    clipped = tf.clip_by_value(boxes, 0.0, 1.0)

    def area(b):
        return tf.maximum(b[:, 2] - b[:, 0], 0.0) * tf.maximum(b[:, 3] - b[:, 1], 0.0)

    visible = area(clipped)
    sides = clipped[:, 2:] - clipped[:, :2]
    keep = tf.reduce_all(sides >= MIN_VISIBLE_SIDE, axis=-1)
    return clipped, keep & (visible >= min_visible_fraction * area(boxes))


# NTSC RGB -> YIQ: luma Y and the two chroma axes I, Q.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def color_matrix(saturation: tf.Tensor, hue: tf.Tensor, exposure: tf.Tensor) -> tf.Tensor:
    """(3, 3) matrix M with pixel_row @ M = the linear (YIQ) colour change of one pixel.

    Chroma (I, Q) is scaled by `saturation` and rotated by `hue` turns about the luma axis,
    the YIQ stand-ins for HSV saturation and hue (the direction matches HSV's: red turns
    towards yellow for hue > 0); then all channels are scaled by `exposure`, which scales
    V = max(R, G, B) exactly.
    """
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    angle = -2.0 * math.pi * hue
    cos, sin = saturation * tf.cos(angle), saturation * tf.sin(angle)
    in_yiq = tf.stack(
        [tf.constant([1.0, 0.0, 0.0]), tf.stack([0.0, cos, -sin]), tf.stack([0.0, sin, cos])]
    )
    column_matrix = tf.linalg.inv(to_yiq) @ in_yiq @ to_yiq  # acts on column pixels
    return exposure * tf.transpose(column_matrix)


def mix_channels(image: tf.Tensor, matrix: tf.Tensor, bias: tf.Tensor | None = None):
    """(H, W, 3) image -> image @ matrix (+ bias) per pixel, as one matrix multiply.

    Per-channel arithmetic with broadcasting is several times slower on CPU than this.
    """
    pixels = tf.reshape(image, [-1, 3]) @ matrix
    if bias is not None:
        pixels = tf.nn.bias_add(pixels, bias)
    return tf.reshape(pixels, tf.shape(image))


def adjust_color(
    image: tf.Tensor,
    *,
    saturation: tf.Tensor,
    exposure: tf.Tensor,
    hue: tf.Tensor,
    color_space: str = "hsv",
) -> tf.Tensor:
    """Scales saturation and exposure (HSV value), shifts hue (turns); clips to [0, 1].

    Args:
      image: (H, W, 3) float RGB in [0, 1].
      color_space: 'hsv' does it exactly in HSV space (S and V clamped at 1: one HSV round
        trip for the hue, closed forms for S and V; darknet leaves S and V unclamped and
        clamps R, G and B after converting back, which differs where V or S exceeds 1);
        'yiq' applies one
        color_matrix, about 4x cheaper on CPU (the saturation and hue of YIQ, not HSV;
        exposure is the same).
    """
    if color_space == "yiq":
        image = mix_channels(image, color_matrix(saturation, hue, exposure))
    else:
        image = scale_saturation_and_value(tf.image.adjust_hue(image, hue), saturation, exposure)
    return tf.clip_by_value(image, 0.0, 1.0)


def scale_saturation_and_value(
    image: tf.Tensor, saturation: tf.Tensor, exposure: tf.Tensor
) -> tf.Tensor:
    """Exact HSV S <- min(S * saturation, 1), V <- min(V * exposure, 1) of an (H, W, 3) image.

    Without a round trip through HSV: with V = max(R, G, B) and m = min(R, G, B), a pixel is
    V - (V - m) * f(H) per channel, so scaling S = (V - m) / V by k at fixed H and V moves every
    channel to V + (c - V) * k, k = min(saturation, V / (V - m)); scaling V at fixed H and S
    scales every channel by min(exposure, 1 / V). Grey (V = m) and black pixels get gain 0 where
    the division is undefined, which is their exact result. About half the CPU time of
    `tf.image.adjust_saturation` followed by the exposure.
    """
    red, green, blue = tf.unstack(image, axis=-1)
    value = tf.maximum(tf.maximum(red, green), blue)
    minimum = tf.minimum(tf.minimum(red, green), blue)
    chroma_gain = tf.minimum(saturation, tf.math.divide_no_nan(value, value - minimum))
    value_gain = tf.minimum(exposure, tf.math.reciprocal_no_nan(value))
    # Per channel: (V + (c - V) * chroma_gain) * value_gain = c * gain + offset.
    gain = chroma_gain * value_gain
    offset = value * (value_gain - gain)
    return image * gain[..., None] + offset[..., None]


# Unnormalized pixels: `random_color`'s default.
IDENTITY = ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def _color_then_affine(image, saturation, exposure, hue, scale, offset, *, color_space, jitter):
    if jitter:
        image = adjust_color(
            image, saturation=saturation, exposure=exposure, hue=hue, color_space=color_space
        )
    return image * scale + offset


# XLA fuses the colour change and the normalization into one pass over the pixels: 3-4 times
# faster than TensorFlow's kernels one by one (BENCHMARKS.md, "Input pipeline"). It compiles
# once per image shape, hence `random_color` at the model input's fixed size.
_compiled_color_then_affine = tf.function(_color_then_affine, jit_compile=True, autograph=False)


def random_color(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    exposure: float,
    saturation: float,
    hue: float,
    color_space: str = "hsv",
    normalization: tuple[tuple[float, ...], tuple[float, ...]] = IDENTITY,
) -> tf.Tensor:
    """adjust_color with exposure and saturation factors log-uniform in [1/f, f] and a hue
    shift uniform in [-hue, hue], then `pixel * scale + offset` per channel, `(scale,
    offset) = normalization` (the model's normalization: the pipeline's `_NORMALIZATIONS`),
    in one function compiled by XLA; each new (H, W, 3) shape of `image` compiles once
    (tenths of a second). Darknet's factors span the same [1/f, f], drawn uniformly from
    [1, f] and inverted half the time. Factors of 1 and a hue of 0 (no jitter, as
    configs/shapes.py asks) leave the colours as they are: the colour ops at those values
    cost the README run 5.6% of its steps' speed (its input pipeline shares the two cores),
    and moved pixels by float rounding.

    Returns:
      the (H, W, 3) float32 image, `image` itself when there is neither jitter nor
      normalization.
    """
    jitter = not (exposure == 1 and saturation == 1 and hue == 0)
    if not jitter and tuple(map(tuple, normalization)) == IDENTITY:
        return image
    exposure_seed, saturation_seed, hue_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )

    def log_uniform(factor, factor_seed):
        log_factor = math.log(factor)
        return tf.exp(tf.random.stateless_uniform([], factor_seed, -log_factor, log_factor))

    scale, offset = normalization
    return _compiled_color_then_affine(
        image,
        log_uniform(saturation, saturation_seed),
        log_uniform(exposure, exposure_seed),
        tf.random.stateless_uniform([], hue_seed, -hue, hue),
        tf.constant(scale, tf.float32),
        tf.constant(offset, tf.float32),
        color_space=color_space,
        jitter=jitter,
    )


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """Separable Gaussian blur of a (H, W, C) float image; borders reflect.

    Args:
      sigma: scalar standard deviation in pixels.
      radius: static kernel half-width (taps = 2 * radius + 1), about 3 sigma.
    """
    channels = image.shape[-1]
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel /= tf.reduce_sum(kernel)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], "VALID")
    return blurred[0]


def random_blur(
    image: tf.Tensor, seed: tf.Tensor, *, probability: float, max_sigma: float
) -> tf.Tensor:
    """With `probability`, blurs with sigma uniform in [0.05, 1) x `max_sigma` pixels (not
    from 0: a blur much under a pixel leaves the image as it was)."""
    apply_seed, sigma_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    sigma = tf.random.stateless_uniform([], sigma_seed, 0.05 * max_sigma, max_sigma)
    return tf.cond(
        tf.random.stateless_uniform([], apply_seed) < probability,
        lambda: gaussian_blur(image, sigma, radius=blur_radius(max_sigma)),
        lambda: image,
    )


def augment(
    image: tf.Tensor,
    boxes: tf.Tensor,
    seed: tf.Tensor,
    config,
    output_size: int,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] = IDENTITY,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Applies the random geometry and colour of `config.data.augment` to one example,
    resizing it to the model input on the way, and normalizes it.

    Args:
      image: (H, W, 3) uint8 decoded image.
      boxes: (N, 4) float32 normalized yxyx.
      seed: [2] integer stateless seed; the result is a pure function of it.
      config: the `augment` ConfigDict (see yolojax/data/config.py).
      output_size: side of the square model input, in pixels.
      normalization: (scale, offset), 3 floats each: the model's normalization of [0, 1]
        pixels (`random_color`).

    Returns:
      image (output_size, output_size, 3) float32, normalized (not yet blurred: blur comes
      after, `random_blur`); boxes (N, 4) in the window's frame, clipped to [0, 1]; keep
      (N,) bool, False for boxes that (mostly) left the window.
    """
    geometry_seed, color_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    window = sample_window(
        geometry_seed, height, width, scale_translate=config.scale_translate, flip=config.flip
    )
    boxes, keep = clip_boxes(
        window_boxes(boxes, window, height, width), config.min_visible_fraction
    )
    image = resize(tf.cast(crop_window(image, window), tf.float32) / 255.0, output_size)
    # Colour after the resize: its cost is then the model input's, whatever the stored size
    # (a 12-megapixel photo's colour at its own size would cost 60 times a VOC image's), and
    # its one fixed shape is what lets XLA compile it once (`random_color`). Per pixel but
    # not linear (hue, the clips), so it does not commute with the resize exactly; at edges
    # the shifted mix of two colours differs from the mix of the shifted ones, which an
    # augmentation's randomness does not mind.
    image = random_color(
        image,
        color_seed,
        exposure=config.exposure,
        saturation=config.saturation,
        hue=config.hue,
        color_space=config.color_space,
        normalization=normalization,
    )
    return image, boxes, keep
