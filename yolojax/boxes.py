"""Box format conversions and IoU for NumPy and JAX arrays.

Formats (last axis of size 4):
  * ``yxyx``: ``[ymin, xmin, ymax, xmax]``, the TFDS convention used on device, normalized
    to [0, 1].
  * ``xyxy``: ``[xmin, ymin, xmax, ymax]``, the PASCAL VOC / evaluator convention, any unit.
  * ``cxcywh``: ``[cx, cy, w, h]``, centre and size.

Every function takes NumPy or JAX arrays and returns the same kind: NumPy (or a list) in,
NumPy out (no device transfer); JAX in (or a tracer under ``jit``), JAX out.
"""

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.validation import known_values


def _xnp(*arrays):
    """The array namespace for the inputs: ``jnp`` if any input is a JAX array, else ``np``."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _boxes(boxes, name, *, real: bool = False):
    """``boxes`` as an array (a list becomes NumPy) after checking its shape is (..., 4).

    With ``real``, integer boxes become floating point (float32 in JAX, float64 in NumPy):
    differences of unsigned coordinates would wrap around (uint8 ``3 - 5`` is 254).
    """
    if not isinstance(boxes, jax.Array | np.ndarray):
        boxes = np.asarray(boxes)
        if boxes.shape == (0,):  # [] for no boxes, as VOCEvaluator.add takes it
            boxes = boxes.reshape(0, 4)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4); got {tuple(boxes.shape)}.")
    if real and boxes.dtype.kind in "biu":
        boxes = boxes.astype(jnp.float32 if isinstance(boxes, jax.Array) else np.float64)
    return boxes


def yxyx_to_xyxy(boxes):
    """``[..., 4]`` yxyx → ``[..., 4]`` xyxy (a coordinate swap, unit unchanged)."""
    boxes = _boxes(boxes, "boxes")
    return boxes[..., [1, 0, 3, 2]]


def xyxy_to_yxyx(boxes):
    """``[..., 4]`` xyxy → ``[..., 4]`` yxyx (a coordinate swap, unit unchanged)."""
    return yxyx_to_xyxy(boxes)  # the same swap undoes itself


def _image_sizes(xnp, boxes, height, width, order: str):
    """``(..., 4)`` image sizes in ``order`` ('hwhw' or 'whwh') for each of ``boxes``.

    Raises:
      ValueError: ``height`` or ``width`` does not broadcast to ``boxes[..., 0]``, is 1-D
        against boxes with two or more leading axes, or, where the values are known (not
        traced under jit), is not a finite positive number.
    """
    if boxes.ndim >= 3 and 1 in (np.ndim(height), np.ndim(width)):
        # (N,) sizes against (N, M, 4) boxes broadcast along M, each image's boxes scaled by
        # every image's size in turn: that silent result when N == M, an error otherwise.
        raise ValueError(
            f"height {np.shape(height)} and width {np.shape(width)} against boxes "
            f"{tuple(boxes.shape)} would line up with the boxes of each image, not the "
            "images: for one size per image of (N, M, 4) boxes, pass heights[:, None] and "
            f"widths[:, None]; for one per box, sizes of shape {tuple(boxes.shape[:-1])}."
        )
    try:  # broadcast_to: a (N,) size against (N, 1, 4) boxes is no (N, N) of sizes
        height, width = (xnp.broadcast_to(size, boxes.shape[:-1]) for size in (height, width))
    except ValueError as error:
        raise ValueError(
            f"height {xnp.shape(height)} and width {xnp.shape(width)} must broadcast to the "
            f"boxes' {tuple(boxes.shape[:-1])} (boxes {tuple(boxes.shape)}): for one size per "
            "image of (N, M, 4) boxes, pass heights[:, None] and widths[:, None]."
        ) from error
    for name, size in (("height", height), ("width", width)):
        known = known_values(size)
        if known is None:
            continue
        wrong = known[~(np.isfinite(known) & (known > 0))]  # NaN too
        if wrong.size:
            raise ValueError(
                f"height and width must be positive image sizes in pixels; got {name} {wrong[0]}."
            )
    sizes = (height, width) if order == "hwhw" else (width, height)
    return xnp.stack([*sizes, *sizes], -1)


def normalized_yxyx_to_pixel_xyxy(boxes, height, width):
    """``[..., 4]`` normalized yxyx → ``[..., 4]`` xyxy in pixels of a ``height × width`` image.

    ``height`` and ``width`` are positive numbers, or arrays broadcastable to
    ``boxes[..., 0]`` (one image size per box; for one per image of ``(N, M, 4)`` boxes,
    ``(N, 1)`` arrays: a 1-D one is refused there); sizes are checked where
    their values are known (not traced under jit). The result has the dtype the product
    promotes to (float32 boxes times Python ints are float64 in NumPy).
    """
    boxes = _boxes(boxes, "boxes")
    xnp = _xnp(boxes, height, width)
    return yxyx_to_xyxy(boxes) * _image_sizes(xnp, boxes, height, width, "whwh")


def pixel_xyxy_to_normalized_yxyx(boxes, height, width):
    """``[..., 4]`` xyxy in pixels of a ``height × width`` image → ``[..., 4]`` normalized
    yxyx (the inverse of :func:`normalized_yxyx_to_pixel_xyxy`).

    ``height`` and ``width`` are positive numbers, or arrays broadcastable to
    ``boxes[..., 0]`` (one image size per box; for one per image of ``(N, M, 4)`` boxes,
    ``(N, 1)`` arrays: a 1-D one is refused there); sizes are checked where
    their values are known (not traced under jit). Integer boxes become float64 (NumPy) or
    float32 (JAX).
    """
    boxes = _boxes(boxes, "boxes", real=True)
    xnp = _xnp(boxes, height, width)
    return xyxy_to_yxyx(boxes) / _image_sizes(xnp, boxes, height, width, "hwhw")


def yxyx_to_cxcywh(boxes):
    """``[..., 4]`` yxyx → ``[..., 4]`` cxcywh in the same unit."""
    boxes = _boxes(boxes, "boxes", real=True)
    xnp = _xnp(boxes)
    ymin, xmin, ymax, xmax = (boxes[..., i] for i in range(4))
    return xnp.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin], axis=-1)


def cxcywh_to_yxyx(boxes):
    """``[..., 4]`` cxcywh → ``[..., 4]`` yxyx in the same unit."""
    boxes = _boxes(boxes, "boxes", real=True)
    xnp = _xnp(boxes)
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return xnp.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


def inverted(boxes):
    """``[..., 4]`` corner boxes, xyxy or yxyx (each puts a min before its max) → ``[...]``
    bool, True where a max lies below its min: boxes in another format, such as
    ``[x, y, w, h]``."""
    boxes = _boxes(boxes, "boxes")
    return (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])


# How far past [0, 1] a normalized coordinate may be (float rounding of a user's own
# conversion) before it is taken for a pixel coordinate.
NORMALIZED_SLACK = 1e-3


def check_normalized_yxyx(name: str, boxes, *, slack: float = NORMALIZED_SLACK) -> None:
    """Raises ValueError unless each of the ``(..., 4)`` boxes (NumPy, or values a NumPy
    array can hold) is a finite normalized ``[ymin, xmin, ymax, xmax]``, naming the first
    problem found and what to do: a value not finite; one outside [0, 1] by more than
    ``slack`` (pixel coordinates); a max below its min (another format, such as
    ``[x, y, w, h]``).

    A box in another corner order (``xyxy``) passes: its values alone cannot tell.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    outside = "outside [0, 1]" + (f" by more than {slack:g}" if slack >= 0.01 else "")
    finite = boxes[np.isfinite(boxes)]
    if finite.size and finite.min() >= -1 and finite.max() <= 2:  # past the image's edge
        outside_advice = " Clip boxes that reach past the image: np.clip(boxes, 0, 1)."
    else:
        outside_advice = (
            " Pixel xyxy boxes convert with "
            "yolojax.pixel_xyxy_to_normalized_yxyx(boxes, height, width)."
        )
    problems = (
        ("a value that is not finite", ~np.isfinite(boxes).all(axis=-1), ""),
        (
            f"a value {outside}",
            ~((boxes >= -slack) & (boxes <= 1 + slack)).all(axis=-1),
            outside_advice,
        ),
        (
            "a max below its min",
            inverted(boxes),
            " Boxes of another format, such as [x, y, w, h], need converting to corners "
            "(centre-size boxes: yolojax.cxcywh_to_yxyx).",
        ),
    )
    for problem, bad, advice in problems:
        if bad.any():
            raise ValueError(
                f"{name} must be normalized [ymin, xmin, ymax, xmax] in [0, 1]; "
                f"{int(bad.sum())} box(es) have {problem}, such as "
                f"{[float(f'{value:.6g}') for value in boxes[bad][0].tolist()]}." + advice
            )


def box_area(boxes):
    """Area of ``[..., 4]`` boxes in yxyx or xyxy (the formula is the same); ``[...]``.

    Inverted boxes (max < min) have area 0, not a negative area.
    """
    boxes = _boxes(boxes, "boxes", real=True)
    xnp = _xnp(boxes)
    return xnp.maximum(boxes[..., 2] - boxes[..., 0], 0) * xnp.maximum(
        boxes[..., 3] - boxes[..., 1], 0
    )


def _intersection_over_union(boxes1, boxes2, xnp):
    """IoU of broadcastable ``[..., 4]`` boxes; 0 where the union is empty, NaN where a
    coordinate is NaN."""
    low = xnp.maximum(boxes1[..., :2], boxes2[..., :2])
    high = xnp.minimum(boxes1[..., 2:], boxes2[..., 2:])
    size = xnp.maximum(high - low, 0)
    intersection = size[..., 0] * size[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - intersection
    # Two empty boxes have union 0: their IoU is 0, and the guarded division keeps
    # gradients finite under jax.grad (no 0/0 on the untaken branch). A NaN union is not 0:
    # its IoU stays NaN, as torchvision's box_iou gives it, where a 0 would hide a bad box.
    empty = union == 0
    return xnp.where(empty, 0, intersection / xnp.where(empty, 1, union))


def elementwise_iou(boxes1, boxes2):
    """IoU of corresponding boxes.

    Args:
      boxes1: ``[..., 4]`` boxes, yxyx or xyxy (both inputs in the same format and unit).
      boxes2: ``[..., 4]`` boxes broadcastable against ``boxes1``.

    Returns:
      ``[...]`` IoU in [0, 1]; 0 where both boxes are empty, NaN where either has a NaN
      coordinate. An inverted box (a max below its min: another format, such as
      [x, y, w, h]; :func:`inverted` finds them) has area 0 and IoU 0 with every box.
    """
    boxes1 = _boxes(boxes1, "boxes1", real=True)
    boxes2 = _boxes(boxes2, "boxes2", real=True)
    try:
        np.broadcast_shapes(boxes1.shape, boxes2.shape)
    except ValueError:
        raise ValueError(
            f"boxes1 {tuple(boxes1.shape)} and boxes2 {tuple(boxes2.shape)} do not broadcast "
            "against each other; use pairwise_iou for every pair of (N, 4) and (M, 4) boxes."
        ) from None
    return _intersection_over_union(boxes1, boxes2, _xnp(boxes1, boxes2))


def pairwise_iou(boxes1, boxes2):
    """IoU of every box in ``boxes1`` with every box in ``boxes2``.

    Args:
      boxes1: ``[N, 4]`` boxes, yxyx or xyxy.
      boxes2: ``[M, 4]`` boxes in the same format and unit.

    Returns:
      ``[N, M]`` IoU matrix in [0, 1]; an inverted box's row or column is 0, and a NaN
      box's NaN, as in :func:`elementwise_iou`.
    """
    boxes1 = _boxes(boxes1, "boxes1", real=True)
    boxes2 = _boxes(boxes2, "boxes2", real=True)
    if boxes1.ndim != 2 or boxes2.ndim != 2:
        raise ValueError(
            f"pairwise_iou takes boxes1 (N, 4) and boxes2 (M, 4); got {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}. Use elementwise_iou for batched, broadcast inputs."
        )
    return _intersection_over_union(boxes1[:, None, :], boxes2[None, :, :], _xnp(boxes1, boxes2))
