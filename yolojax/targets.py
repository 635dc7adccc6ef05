"""Ground-truth boxes → YOLOv1 target grid, on device.

The grid follows the library contract (docs/architecture.md): per cell
``[one-hot class (C), objectness, x, y, w, h]`` where ``x, y`` is the offset of the box
centre inside its cell (0..1) and ``w, h`` is the box size in cell units (normalized size
× S, so larger than 1 for boxes wider than a cell).
"""

import functools

import jax
import jax.numpy as jnp

from yolojax import boxes as box_ops
from yolojax.validation import check_flags, check_positive_int, device_axis_hint, known_values


def target_channels(num_classes: int) -> int:
    """Channels of a target grid cell: C one-hot classes + objectness + x, y, w, h."""
    return num_classes + 5


def split_targets(targets, num_classes: int):
    """``(..., C + 5)`` target grids (:func:`encode`'s, NumPy or JAX) → ``(classes (..., C)``
    one-hot, ``has_object (...)`` 0 or 1, ``xywh (..., 4))``: the object's centre as an
    offset in its cell and its width and height, in cells (0 in a cell without one)."""
    return targets[..., :num_classes], targets[..., num_classes], targets[..., num_classes + 1 :]


def _as_arrays(boxes, labels, mask):
    """``boxes`` (float32), ``labels`` and ``mask`` as arrays; a None mask is all True."""
    try:
        boxes = jnp.asarray(boxes, jnp.float32)
    except ValueError as error:  # NumPy's "inhomogeneous shape" names no argument
        raise ValueError(
            f"boxes must be an array of boxes, each image's padded to the same number (with "
            f"mask False for the padding); got {type(boxes).__name__} ({error})."
        ) from None
    if boxes.shape == (0,):  # `[]` for an image without boxes
        boxes = boxes.reshape(0, 4)
    mask = jnp.ones(boxes.shape[:-1], bool) if mask is None else jnp.asarray(mask)
    labels = jnp.asarray(labels)
    if labels.size == 0:  # no ids, of no type: `[]` is float
        labels = labels.astype(jnp.int32)
    return boxes, labels, mask


def _check_encode_args(boxes, labels, mask, grid_size, num_classes):
    check_positive_int("grid_size", grid_size)
    check_positive_int("num_classes", num_classes)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        if boxes.shape == (4,):
            hint = " For one box, pass [[ymin, xmin, ymax, xmax]]."
        elif boxes.ndim == 3:
            hint = " For a batch (N, max_boxes, 4), use encode_batch."
        else:
            hint = ""
        raise ValueError(
            f"boxes must have shape (max_boxes, 4) in normalized yxyx; got {boxes.shape}.{hint}"
        )
    for name, array in (("labels", labels), ("mask", mask)):
        if array.shape != boxes.shape[:1]:
            raise ValueError(f"{name} must have shape {boxes.shape[:1]}; got {array.shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):  # a float id would one-hot to nothing
        raise ValueError(f"labels must be integer class ids; got dtype {labels.dtype}.")


def _check_encode_values(boxes, labels, mask, num_classes):
    """Refuses real boxes that cannot be normalized yxyx, and class ids outside [0, C), where
    the values are known (outside jit and vmap; traced values pass unchecked). Such inputs
    would encode without error into targets that teach the model nothing: pixel boxes land
    in the last cell with offsets in the hundreds, ``[x, y, w, h]`` boxes come out inverted
    and are dropped, and an id ≥ C gets no class."""
    boxes, labels, mask = (known_values(array) for array in (boxes, labels, mask))
    if boxes is None or labels is None or mask is None:
        return
    mask = check_flags("mask", mask)
    real_boxes, real_labels = boxes[mask], labels[mask]  # (K, 4), (K,); padding may be anything
    box_ops.check_normalized_yxyx("boxes (real, mask True)", real_boxes)
    bad_labels = (real_labels < 0) | (real_labels >= num_classes)
    if bad_labels.any():
        raise ValueError(
            f"labels must be class ids in [0, {num_classes}) for real boxes (mask True); got "
            f"{sorted(set(real_labels[bad_labels].tolist()))}. Set mask False for boxes to "
            "leave out."
        )


def encode(boxes, labels, mask=None, *, grid_size: int, num_classes: int) -> jax.Array:
    """Encodes one image's padded boxes as a YOLOv1 target grid.

    A YOLOv1 cell holds at most one object. When several box centres fall into the same
    cell, the box with the largest area is kept (it is the one a detector is most expected
    to find); among boxes of equal area, the lowest index wins. Padding (``mask`` False) and
    degenerate boxes (zero or, under jit, negative width or height) are ignored. Centres
    exactly on the right/bottom edge (1.0) belong to the last cell. A centre on a border
    between two cells goes to the one float32 rounding of ``centre · S`` puts it in (the
    upper or left one with an offset a few float32 steps below 1, or the other with 0: the
    same box).

    Args:
      boxes: ``(M, 4)`` float boxes, normalized ``[ymin, xmin, ymax, xmax]`` in [0, 1]. Clip
        boxes that reach past the image first (the pipeline does; ``np.clip(boxes, 0, 1)``):
        outside jit such a box is refused; under jit its centre and size are encoded as
        given, a target outside the grid's contract. ``M`` may be 0 (an image without
        objects).
      labels: ``(M,)`` int class ids in ``[0, num_classes)``.
      mask: ``(M,)`` bool (or 0/1 integers), True for real boxes; None: all are real.
      grid_size: S, the grid is S×S.
      num_classes: C.

    Returns:
      ``(S, S, C + 5)`` float32 grid indexed ``[row (y), col (x), channel]``.

    Raises:
      ValueError: outside jit and vmap, for real boxes outside [0, 1] (pixel coordinates, or
        boxes reaching past the image) or inverted (another box format), for labels outside
        ``[0, num_classes)``, and for a mask holding other values than 0 and 1.
        Under jit these cannot be checked: an out-of-range id gives an all-zero class vector.
    """
    boxes, labels, mask = _as_arrays(boxes, labels, mask)
    _check_encode_args(boxes, labels, mask, grid_size, num_classes)
    _check_encode_values(boxes, labels, mask, num_classes)
    s = grid_size
    if boxes.shape[0] == 0:  # no object in any cell (argmax below needs a box)
        return jnp.zeros((s, s, target_channels(num_classes)), jnp.float32)
    ymin, xmin, ymax, xmax = (boxes[:, i] for i in range(4))
    height, width = ymax - ymin, xmax - xmin
    valid = mask.astype(bool) & (height > 0) & (width > 0)

    centre_y, centre_x = (ymin + ymax) / 2 * s, (xmin + xmax) / 2 * s  # in cell units
    row = jnp.clip(jnp.floor(centre_y), 0, s - 1).astype(jnp.int32)
    col = jnp.clip(jnp.floor(centre_x), 0, s - 1).astype(jnp.int32)
    cell = row * s + col  # (M,)

    # Pick one box per cell: priority = area for valid boxes, -inf otherwise; argmax over
    # boxes returns the first maximum, which makes ties go to the lowest index.
    in_cell = cell[:, None] == jnp.arange(s * s)[None, :]  # (M, S*S)
    priority = jnp.where(valid, height * width, -jnp.inf)
    candidates = jnp.where(in_cell, priority[:, None], -jnp.inf)  # (M, S*S)
    winner = jnp.argmax(candidates, axis=0)  # (S*S,)
    has_object = jnp.any(in_cell & valid[:, None], axis=0)  # (S*S,)

    cell_index = jnp.arange(s * s)
    offset_x = centre_x[winner] - (cell_index % s)
    offset_y = centre_y[winner] - (cell_index // s)
    geometry = jnp.stack([offset_x, offset_y, width[winner] * s, height[winner] * s], axis=-1)
    one_hot = jax.nn.one_hot(labels[winner], num_classes, dtype=jnp.float32)
    grid = jnp.concatenate([one_hot, jnp.ones((s * s, 1)), geometry], axis=-1)
    grid = jnp.where(has_object[:, None], grid, 0.0)
    return grid.reshape(s, s, target_channels(num_classes))


def encode_batch(boxes, labels, mask=None, *, grid_size: int, num_classes: int) -> jax.Array:
    """:func:`encode` over a batch: ``(N, M, 4), (N, M), (N, M)`` → ``(N, S, S, C + 5)``.

    Boxes are normalized ``[ymin, xmin, ymax, xmax]``, each image's padded to the same M
    boxes; ``mask`` marks the real ones (None: every box is real)."""
    boxes, labels, mask = _as_arrays(boxes, labels, mask)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        hint = device_axis_hint("boxes", boxes.ndim, 3)
        raise ValueError(f"boxes must have shape (N, max_boxes, 4); got {boxes.shape}.{hint}")
    # Checked here so that a mismatch is named, not reported by vmap as inconsistent sizes.
    for name, array in (("labels", labels), ("mask", mask)):
        if array.shape != boxes.shape[:2]:
            raise ValueError(
                f"{name} must have shape (N, max_boxes) = {boxes.shape[:2]} to match boxes "
                f"{boxes.shape}; got {array.shape}."
            )
    check_positive_int("grid_size", grid_size)
    check_positive_int("num_classes", num_classes)
    _check_encode_values(boxes, labels, mask, num_classes)  # vmap would trace them
    encode_one = functools.partial(encode, grid_size=grid_size, num_classes=num_classes)
    return jax.vmap(encode_one)(boxes, labels, mask)
