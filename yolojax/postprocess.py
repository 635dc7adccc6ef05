"""Raw YOLOv1 outputs → scored boxes → class-aware NMS, all with static shapes under jit."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from yolojax import boxes as box_ops
from yolojax.outputs import check_grid_layout, split_predictions
from yolojax.validation import check_finite, check_positive_int, check_threshold, known_values

# Candidates that enter NMS per image by default: about a quarter of VOC's S·S·B·C = 1960
# (box, class) pairs, rounded up to a power of two. NMS builds a K × K IoU matrix per image,
# so K bounds its memory and time.
PRE_NMS_TOP_K = 512
# detect's defaults, config.eval's too (so the library's detections are evaluate.py's):
# a low score threshold, so the precision/recall curve is complete; NMS at IoU 0.45 (the
# paper gives none; Darknet's validation uses 0.5, later YOLOs 0.45); the best 100 kept per
# image (COCO's cap).
SCORE_THRESHOLD = 0.005
IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 100


class Detections(NamedTuple):
    """Fixed-size detections of a batch; only entries where ``valid`` is True are real.

    Attributes:
      boxes: ``(N, K, 4)`` normalized ``[ymin, xmin, ymax, xmax]``.
      scores: ``(N, K)`` confidence × class score, descending among valid entries.
      labels: ``(N, K)`` int32 class ids.
      valid: ``(N, K)`` bool.
    """

    boxes: jax.Array
    scores: jax.Array
    labels: jax.Array
    valid: jax.Array


class Candidates(NamedTuple):
    """Every predicted box of a batch with its per-class scores, before NMS (:func:`decode`).

    Attributes:
      boxes: ``(N, S·S·B, 4)`` normalized ``[ymin, xmin, ymax, xmax]`` clipped to [0, 1],
        ordered by ``(row, col, box)``.
      scores: ``(N, S·S·B, C)`` confidence × class probability.
    """

    boxes: jax.Array
    scores: jax.Array


def decode(outputs, *, num_classes: int, num_boxes: int) -> Candidates:
    """Turns raw outputs into image-space boxes and per-class scores.

    The score of box ``b`` for class ``c`` is ``confidence_b × p(c)`` (the paper's
    class-specific confidence). Both factors are clipped to [0, 1] first: the network is
    trained with squared error, so raw outputs can leave that range, and two negative
    factors must not multiply into a positive score. Boxes that are empty after clipping
    to the image score 0. Outputs that are NaN or infinite are refused where their values
    are known (outside ``jit`` and ``vmap``): clipped, they would score 0 and detect
    nothing, a diverged model passing for one that sees no objects.

    Args:
      outputs: ``(N, S, S, C + 5B)`` raw network outputs.
      num_classes: C.
      num_boxes: B.

    Returns:
      :class:`Candidates`: ``boxes (N, S·S·B, 4)`` normalized yxyx clipped to [0, 1],
      ordered by ``(row, col, box)``, and ``scores (N, S·S·B, C)`` (a pair: ``boxes, scores
      = decode(...)`` unpacks it).
    """
    outputs = jnp.asarray(outputs, jnp.float32)
    check_grid_layout(outputs, "outputs")
    known = known_values(outputs)
    if known is not None:  # values known, a jitted function's constant too: checked now
        with jax.ensure_compile_time_eval():
            check_outputs_finite(finite_outputs(known))
    batch_size, s = outputs.shape[0], outputs.shape[1]
    class_scores, box_fields = split_predictions(
        outputs, num_classes=num_classes, num_boxes=num_boxes, name="outputs"
    )
    xywh = box_fields[..., 1:].at[..., 2:].max(0.0)  # a negative size is an empty box
    # [x, y, w, h] is a cxcywh box in its cell's frame, in cell units.
    corners = box_ops.cxcywh_to_yxyx(xywh)  # (N,S,S,B,4) yxyx relative to the cell
    rows, cols = jnp.meshgrid(jnp.arange(s), jnp.arange(s), indexing="ij")
    cell_origin = jnp.stack([rows, cols, rows, cols], axis=-1)[:, :, None, :]  # (S,S,1,4)
    boxes = jnp.clip((corners + cell_origin) / s, 0.0, 1.0)
    confidence = jnp.clip(box_fields[..., 0], 0.0, 1.0)  # (N,S,S,B)
    class_probability = jnp.clip(class_scores, 0.0, 1.0)[..., None, :]  # (N,S,S,1,C)
    scores = confidence[..., None] * class_probability  # (N,S,S,B,C)
    # An empty box can neither match nor suppress anything: it is no detection.
    scores = jnp.where(box_ops.box_area(boxes)[..., None] > 0, scores, 0.0)
    num_predictions = s * s * num_boxes  # not -1: a batch of 0 would leave it undefined
    return Candidates(
        boxes=boxes.reshape(batch_size, num_predictions, 4),
        scores=scores.reshape(batch_size, num_predictions, num_classes),
    )


class NonFiniteOutputsError(ValueError):
    """Model outputs that hold NaN or infinity, from which nothing can be detected.

    Attributes:
      images: the images concerned: indices among the caller's, or names (file paths).
    """

    def __init__(self, images: list):
        self.images = list(images)
        shown = ", ".join(str(image) for image in self.images[:10])
        super().__init__(
            f"The model's outputs are NaN or infinite for image(s) [{shown}"
            f"{', ...' if len(self.images) > 10 else ''}], so nothing can be detected in "
            f"them: {NONFINITE_CAUSES}."
        )


# Why a model's outputs are NaN or infinite, and what to try.
NONFINITE_CAUSES = (
    "its weights hold NaN or infinity (from a training that diverged?), or its bfloat16 "
    "activations overflowed (try model.dtype='float32')"
)


def finite_outputs(outputs) -> jax.Array:
    """``(N,)`` bool: whether each image's ``(N, S, S, C + 5B)`` model outputs are all finite
    (under ``jit`` too: :func:`check_outputs_finite` then takes the flags out)."""
    return jnp.isfinite(outputs).all(axis=(1, 2, 3))


def check_outputs_finite(finite, first_index: int = 0) -> None:
    """Raises :class:`NonFiniteOutputsError` naming the images whose model outputs hold NaN
    or infinity.

    Args:
      finite: ``(N,)`` bool, whether each image's outputs are all finite.
      first_index: the index of row 0 among the caller's images.
    """
    bad = np.flatnonzero(~np.asarray(finite)) + first_index
    if bad.size:
        raise NonFiniteOutputsError(bad.tolist())


def _greedy_nms(boxes, labels, eligible, iou_threshold):
    """Greedy NMS over candidates sorted by descending score.

    Args:
      boxes: ``(K, 4)`` yxyx boxes.
      labels: ``(K,)`` class ids: only candidates of the same class suppress each other.
      eligible: ``(K,)`` bool, False for candidates that can be neither kept nor suppress.

    Returns:
      ``(K,)`` bool: kept candidates.
    """
    same_class = labels[:, None] == labels[None, :]
    overlaps = (box_ops.pairwise_iou(boxes, boxes) > iou_threshold) & same_class  # (K, K)

    def visit(i, keep):
        # Candidate i survives if no kept, higher-ranked candidate overlaps it.
        suppressed = jnp.any(keep & overlaps[i] & (jnp.arange(keep.shape[0]) < i))
        return keep.at[i].set(eligible[i] & ~suppressed)

    return jax.lax.fori_loop(0, boxes.shape[0], visit, jnp.zeros_like(eligible))


def _check_probabilities(scores) -> None:
    """Refuses scores above 1 where they are known (outside jit and vmap): logits, whose
    positive values would all pass the threshold as near-certain detections; and scores
    that are not finite."""
    scores = known_values(scores)
    if scores is None:
        return
    check_finite("scores", scores)  # a NaN score would be dropped silently
    if scores.size and scores.max() > 1:
        raise ValueError(
            f"scores must be probabilities in [0, 1] (decode's); got values up to "
            f"{scores.max():g}. Pass probabilities, not logits."
        )


def _check_corners(boxes) -> None:
    """Refuses boxes with a max below their min where they are known (outside jit and vmap):
    boxes in another format, such as [x, y, w, h], have no area, so no box would suppress
    another; and boxes that are not finite."""
    boxes = known_values(boxes)
    if boxes is None:
        return
    check_finite("boxes", boxes)  # a NaN box would be kept, and suppress nothing
    inverted = box_ops.inverted(boxes)
    if inverted.any():
        raise ValueError(
            f"boxes must be [ymin, xmin, ymax, xmax] corners; {int(inverted.sum())} have a max "
            f"below their min, such as {boxes[inverted][0].tolist()}: boxes in another format, "
            "such as [x, y, w, h]? Convert them to corners first."
        )


def _check_nms_args(score_threshold, iou_threshold, max_detections, pre_nms_top_k) -> None:
    check_threshold("score_threshold", score_threshold)
    check_threshold("iou_threshold", iou_threshold)
    check_positive_int("max_detections", max_detections)
    check_positive_int("pre_nms_top_k", pre_nms_top_k)


def nms(
    boxes,
    scores,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
) -> Detections:
    """Class-aware non-maximum suppression for one image (with :func:`detect`'s defaults).

    Every (box, class) pair with a score above 0 and at or above ``score_threshold``, and a
    box of some area, is a candidate (so a threshold of 0 keeps every scored pair but no
    empty box); candidates of different classes never suppress each other. Only the
    ``pre_nms_top_k`` best candidates enter NMS (a bound that keeps the work static; of
    equal scores, the earlier box, then the lower class, ranks first). With
    a very low ``score_threshold`` and crowded images, candidates beyond it that NMS would
    have kept are lost; ``pre_nms_top_k`` = P · C considers them all. Where the values are known
    (outside ``jit`` and ``vmap``), boxes and scores that are not finite, scores above 1 and
    boxes with a max below their min are refused.

    Args:
      boxes: ``(P, 4)`` finite yxyx boxes, normalized (as :func:`decode` gives them) or in
        any other unit: only their IoU matters.
      scores: ``(P, C)`` per-class scores in [0, 1], as :func:`decode` gives them; a score of
        0 or below is never a detection (pass probabilities, not logits).
      score_threshold: candidates below it are dropped.
      iou_threshold: a candidate is suppressed by a higher-scored kept one of the same class
        whose IoU with it exceeds this.
      max_detections: K, the fixed output size.
      pre_nms_top_k: the highest-scored candidates that enter NMS.

    Returns:
      :class:`Detections` for this image with leading shape ``(K,)``.
    """
    boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.ndim != 2:
        raise ValueError(
            f"nms takes one image's boxes (P, 4) and scores (P, C); got {boxes.shape} and "
            f"{scores.shape}. Use detect for a batch."
        )
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have one row per box, shape ({boxes.shape[0]}, C); got {scores.shape}."
        )
    _check_nms_args(score_threshold, iou_threshold, max_detections, pre_nms_top_k)
    _check_probabilities(scores)
    _check_corners(boxes)
    num_candidates = scores.shape[0] * scores.shape[1]
    if num_candidates == 0:  # no boxes: no detections (top_k needs at least one)
        return Detections(  # the dtypes of the general case's jnp.where(..., 0.0)
            boxes=jnp.zeros((max_detections, 4), jnp.result_type(boxes, 0.0)),
            scores=jnp.zeros((max_detections,), jnp.result_type(scores, 0.0)),
            labels=jnp.zeros((max_detections,), jnp.int32),
            valid=jnp.zeros((max_detections,), bool),
        )
    top_k = min(pre_nms_top_k, num_candidates)
    # An empty (or NaN) box is no candidate: scored 0 before the top k are picked, so that
    # it takes none of their places (decode scores those 0; boxes of one's own may be).
    has_area = box_ops.box_area(boxes) > 0
    flat_scores = jnp.where(has_area[:, None], scores, 0).reshape(-1)  # box * C + class
    top_scores, top_index = jax.lax.top_k(flat_scores, top_k)
    box_index, labels = jnp.divmod(top_index, scores.shape[1])
    candidate_boxes = boxes[box_index]
    eligible = (top_scores >= score_threshold) & (top_scores > 0)
    keep = _greedy_nms(candidate_boxes, labels, eligible, iou_threshold)

    # Pad so there are at least max_detections slots, then put kept candidates first, in
    # score order (a stable sort keeps their ranking).
    padding = max(max_detections - top_k, 0)
    keep = jnp.pad(keep, (0, padding))
    order = jnp.argsort(~keep, stable=True)[:max_detections]
    valid = keep[order]
    candidate_boxes = jnp.pad(candidate_boxes, ((0, padding), (0, 0)))
    return Detections(
        boxes=jnp.where(valid[:, None], candidate_boxes[order], 0.0),
        scores=jnp.where(valid, jnp.pad(top_scores, (0, padding))[order], 0.0),
        labels=jnp.where(valid, jnp.pad(labels, (0, padding))[order], 0).astype(jnp.int32),
        valid=valid,
    )


def detect(
    outputs,
    *,
    num_classes: int,
    num_boxes: int,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
) -> Detections:
    """Raw outputs ``(N, S, S, C + 5B)`` → :class:`Detections` with leading shape ``(N, K)``.

    :func:`decode` then :func:`nms` per image (vmapped); jit-able with the keyword
    arguments static.

    Args:
      outputs: the model's raw outputs ``(N, S, S, C + 5B)``.
      num_classes, num_boxes: C and B.
      score_threshold: (box, class) pairs scored below it are dropped (the default is
        evaluation's, ``config.eval.score_threshold``; the Detector's is 0.25).
      iou_threshold: same-class boxes overlapping a better one by more are suppressed.
      max_detections: K, the fixed number of detections per image (padding has
        ``valid`` False).
      pre_nms_top_k: the best-scored pairs per image that enter NMS (:func:`nms`).

    Returns:
      :class:`Detections`: boxes ``(N, K, 4)`` normalized yxyx, scores ``(N, K)``,
      labels ``(N, K)`` int32, valid ``(N, K)`` bool; best first per image.

    Raises:
      NonFiniteOutputsError: outputs that are NaN or infinite, where their values are known
        (outside ``jit``; :func:`decode`).
    """
    _check_nms_args(score_threshold, iou_threshold, max_detections, pre_nms_top_k)
    boxes, scores = decode(outputs, num_classes=num_classes, num_boxes=num_boxes)
    return jax.vmap(
        lambda b, s: nms(
            b,
            s,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            pre_nms_top_k=pre_nms_top_k,
        )
    )(boxes, scores)


def pixel_detections(
    detections: Detections, heights, widths
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each image's real detections, their boxes in its pixels.

    Args:
      detections: a batch's :class:`Detections` (leading shape ``(N, K)``), as
        :func:`detect` gives them (on the device or the host).
      heights, widths: ``(N,)`` each image's size in pixels, or one number for all.

    Returns:
      N tuples ``(boxes, scores, labels)``, only where ``valid``, best first: boxes
      ``(K_i, 4)`` float64 xyxy in continuous pixel coordinates (the image spans ``[0,
      width] × [0, height]``; VOC's 1-based ``xmin``, ``ymin`` are these plus 1), scores
      ``(K_i,)``, labels ``(K_i,)``.
    """
    if np.ndim(detections.boxes) != 3:
        raise ValueError(
            "pixel_detections takes a batch's Detections, boxes (N, K, 4) as detect gives "
            f"them; got boxes {np.shape(detections.boxes)}. For one image's (nms's), add "
            "the batch axis: jax.tree.map(lambda field: field[None], detections)."
        )
    num_images = np.shape(detections.boxes)[0]
    sizes = {"heights": heights, "widths": widths}
    for name, size in sizes.items():
        sizes[name] = np.asarray(size, np.float64)
        if sizes[name].shape not in ((), (num_images,)):
            raise ValueError(
                f"{name} must have shape ({num_images},), one size per image of the batch, or "
                f"be one number; got shape {sizes[name].shape}."
            )
    heights, widths = (np.broadcast_to(size, num_images)[:, None] for size in sizes.values())
    boxes = box_ops.normalized_yxyx_to_pixel_xyxy(
        np.asarray(detections.boxes, np.float64), heights, widths
    )
    scores, labels = np.asarray(detections.scores), np.asarray(detections.labels)
    return [
        (boxes[row][valid], scores[row][valid], labels[row][valid])
        for row, valid in enumerate(np.asarray(detections.valid))
    ]


def detect_with_config(outputs, config, *, score_threshold=None) -> Detections:
    """:func:`detect` of raw outputs ``(N, S, S, C + 5B)`` with the grid of
    ``config.model`` and the settings of ``config.eval`` (``score_threshold`` overrides its
    own)."""
    if score_threshold is None:
        score_threshold = config.eval.score_threshold
    return detect(
        outputs,
        num_classes=config.model.num_classes,
        num_boxes=config.model.num_boxes,
        score_threshold=score_threshold,
        iou_threshold=config.eval.iou_threshold,
        max_detections=config.eval.max_detections,
        pre_nms_top_k=config.eval.pre_nms_top_k,
    )
