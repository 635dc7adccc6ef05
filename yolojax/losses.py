"""The YOLOv1 loss (Redmon et al., 2016, eq. 3), vectorized over images, cells and boxes."""

import jax
import jax.numpy as jnp

from yolojax import boxes as box_ops
from yolojax.outputs import check_grid_layout, split_predictions
from yolojax.targets import split_targets, target_channels
from yolojax.validation import (
    check_finite,
    check_flags,
    check_number,
    check_positive_int,
    known_values,
)

# Bounds the slope of the signed square root of a predicted width/height near 0 (1/√ε).
SQRT_EPSILON = 1e-6
# The loss and its weighted terms, as yolo_loss's metrics name them: the terms sum to the loss.
LOSS_TERMS = ("loss", "coord", "object", "noobj", "class")


def signed_sqrt(values):
    """``p / sqrt(|p| + eps)``: the square root the loss takes of predicted sizes.

    Equal to ``sign(p) · sqrt(|p|)`` up to ``eps / (2 sqrt|p|)``, but smooth and strictly
    increasing: a raw network output can be 0 or negative, and there its slope stays finite
    and positive (``1 / sqrt(eps)`` at 0), so the loss pushes such sizes back up.
    """
    return values * jax.lax.rsqrt(jnp.abs(values) + SQRT_EPSILON)


def _check_loss_args(predictions, targets, num_classes, num_boxes, weights):
    check_positive_int("num_classes", num_classes)
    check_positive_int("num_boxes", num_boxes)
    for name, weight in weights.items():  # as config.loss's are checked
        value = known_values(weight)
        if value is None:  # a sweep under vmap: as given
            continue
        # A number, or a NumPy or JAX scalar, as a float; anything else (True, None, "5")
        # is refused by check_number as it is.
        is_number = value.shape == () and value.dtype.kind in "iuf"
        check_number(name, value.item() if is_number else weight, at_least=0)
    check_grid_layout(predictions, "predictions")
    if predictions.shape[0] == 0:  # the loss is a mean over images
        raise ValueError("predictions must hold at least one image; got a batch of 0.")
    expected = (*predictions.shape[:3], target_channels(num_classes))
    if targets.shape != expected:
        swapped = targets.shape[-1] == num_classes + 5 * num_boxes and predictions.shape[
            -1
        ] == target_channels(num_classes)
        hint = (
            " Swapped? yolo_loss takes the model's outputs first, then encode_batch's targets."
            if swapped
            else " Check grid_size and num_classes."
        )
        raise ValueError(
            f"targets must have shape (N, S, S, C + 5) = {expected} to match predictions "
            f"{predictions.shape}; got {targets.shape}.{hint}"
        )


def _check_target_values(targets, num_classes):
    """Refuses targets that break :func:`yolojax.targets.encode_batch`'s contract, where the
    values are known (outside jit and vmap): with an objectness other than 0 or 1, or a
    negative size, a hand-made grid gives a negative or NaN loss without an error."""
    targets = known_values(targets)
    if targets is None:
        return
    advice = " Make targets with yolojax.encode_batch."
    try:
        check_finite("targets", targets)
        _, has_object, xywh = split_targets(targets, num_classes)
        check_flags(f"targets' objectness (channel C = {num_classes})", has_object)
    except ValueError as error:
        raise ValueError(f"{error}.{advice}") from None
    sizes = xywh[..., 2:]
    if sizes.size and sizes.min() < 0:
        raise ValueError(
            f"targets' w and h (channels C + 3 and C + 4) must be at least 0; got "
            f"{sizes.min():g}.{advice}"
        )


def yolo_loss(
    predictions,
    targets,
    *,
    num_classes: int,
    num_boxes: int = 2,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    rescore: bool = True,
    noobj_on_unassigned: bool = True,
):
    """The YOLOv1 sum-squared loss.

    In a cell holding an object, the *responsible* predictor is the one of the B boxes whose
    predicted box has the highest IoU with the ground truth (ties, including no overlap at
    all: the lower index; docs/architecture.md says why not Darknet's nearest box).

    * coord: ``lambda_coord · Σ resp · [(x - x̂)² + (y - ŷ)² + (√w - √ŵ)² + (√h - √ĥ)²]``,
      with the prediction's root taken by :func:`signed_sqrt`. Sizes are in cell units (the
      paper's are image-normalized), which weighs the size terms S times the paper's; the
      network outputs ``w`` (the paper's outputs ``√w``). See docs/architecture.md.
    * object: ``Σ resp · (c - ĉ)²``; ``ĉ`` is the responsible box's IoU with the ground
      truth (a constant: no gradient flows through it) when ``rescore``, else 1.
    * no-object: ``lambda_noobj · Σ noobj · c²``; ``noobj`` marks every predictor that is not
      responsible when ``noobj_on_unassigned`` (Darknet), else only predictors of cells
      without an object (the seed report's reading).
    * class: ``Σ_cells obj · Σ_c (p(c) - p̂(c))²``.

    Args:
      predictions: ``(N, S, S, C + 5B)`` raw network outputs.
      targets: ``(N, S, S, C + 5)`` grids from :func:`yolojax.targets.encode_batch`;
        outside jit, values that are not finite, an objectness other than 0 and 1 and a
        negative size are refused.
      num_classes: C.
      num_boxes: B.
      lambda_coord: weight of the coordinate term.
      lambda_noobj: weight of the no-object confidence term.
      rescore: confidence target is the IoU (True) or 1 (False).
      noobj_on_unassigned: see above.

    Returns:
      ``(loss, metrics)``: the scalar loss (sum over cells and boxes, divided by N) and a
      dict with each weighted term (``coord``, ``object``, ``noobj``, ``class``, same
      normalization, summing to the loss), ``loss``, and ``iou``: the mean IoU of
      responsible predictors (0 when the batch has no object).
    """
    predictions = jnp.asarray(predictions, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    weights = {"lambda_coord": lambda_coord, "lambda_noobj": lambda_noobj}
    _check_loss_args(predictions, targets, num_classes, num_boxes, weights)
    _check_target_values(targets, num_classes)
    batch_size = predictions.shape[0]

    class_scores, box_fields = split_predictions(
        predictions, num_classes=num_classes, num_boxes=num_boxes
    )
    confidence, pred_xywh = box_fields[..., 0], box_fields[..., 1:]  # (N,S,S,B), (N,S,S,B,4)
    # (N,S,S,C), (N,S,S), (N,S,S,4)
    target_class, has_object, target_xywh = split_targets(targets, num_classes)

    # Both boxes in their cell's frame, in cell units: [x, y, w, h] is a cxcywh box there.
    iou = jax.lax.stop_gradient(
        box_ops.elementwise_iou(
            box_ops.cxcywh_to_yxyx(pred_xywh), box_ops.cxcywh_to_yxyx(target_xywh)[..., None, :]
        )
    )  # (N,S,S,B)
    best = jax.nn.one_hot(jnp.argmax(iou, axis=-1), num_boxes)  # argmax: first max wins ties
    responsible = best * has_object[..., None]  # (N,S,S,B)

    xy_error = jnp.sum((pred_xywh[..., :2] - target_xywh[..., None, :2]) ** 2, axis=-1)
    wh_error = jnp.sum(
        (signed_sqrt(pred_xywh[..., 2:]) - jnp.sqrt(target_xywh[..., None, 2:])) ** 2, axis=-1
    )
    coord = lambda_coord * jnp.sum(responsible * (xy_error + wh_error))

    confidence_target = iou if rescore else jnp.ones_like(iou)
    object_term = jnp.sum(responsible * (confidence - confidence_target) ** 2)

    if noobj_on_unassigned:
        noobj_mask = 1.0 - responsible
    else:
        noobj_mask = jnp.broadcast_to((1.0 - has_object)[..., None], confidence.shape)
    noobj = lambda_noobj * jnp.sum(noobj_mask * confidence**2)

    class_term = jnp.sum(has_object[..., None] * (class_scores - target_class) ** 2)

    terms = {"coord": coord, "object": object_term, "noobj": noobj, "class": class_term}
    metrics = {name: value / batch_size for name, value in terms.items()}
    loss = sum(metrics.values())
    metrics["loss"] = loss
    metrics["iou"] = jnp.sum(responsible * iou) / jnp.maximum(jnp.sum(has_object), 1.0)
    return loss, metrics
