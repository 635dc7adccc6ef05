"""PASCAL VOC detection average precision, following the official devkit protocol.

The protocol (VOCdevkit `VOCevaldet.m`; its Python port `voc_eval.py`, as in py-faster-rcnn,
differs in matching at an IoU strictly above the threshold, where this follows the MATLAB, and
in the 11-point recall thresholds, where this follows the port: see
`average_precision.VOC07_RECALL_THRESHOLDS`), for each class:

1. All detections of the class over the whole set are sorted by score, descending.
2. Each detection picks, among the ground truths of its class in its image, the one of highest
   IoU (the first in annotation order on a tie), whether that one is difficult or already taken.
3. If that IoU is at least `iou_threshold` (the devkit's `ovmax>=VOCopts.minoverlap`; integer
   pixel boxes can hit 0.5 exactly): a difficult ground truth makes the detection ignored
   (neither true nor false positive), a free one makes it a true positive and takes it, a
   taken one makes it a false positive (a duplicate). Otherwise, or with no ground truth of
   its class in its image, it is a false positive.
4. After each counted detection, recall = TP / positives (non-difficult ground truths) and
   precision = TP / (TP + FP). AP is the VOC2007 11-point interpolated average or the area
   under the monotone precision envelope (VOC2010 and later).

Vectorization. Step 2 depends only on the detection and the ground truths, never on the
order: the devkit does not fall back to the second-best ground truth when the best is taken.
So it is computed for all detections at once, over every (detection, ground truth of the same
image and class) pair. The only order dependence in step 3 is which of the detections that
pick the same ground truth comes first by score: that one is the true positive, the others are
duplicates. Everything is array work; the only Python loop is over classes.
"""

import warnings
from collections.abc import Sequence

import numpy as np

from yolojax import average_precision
from yolojax import boxes as box_ops
from yolojax.validation import check_finite, check_flags, check_number, check_positive_int

# How far past [0, 1] a normalized detection may reach (an unclipped detector's boxes) before
# add_normalized_batch takes it for a pixel box, which would be scaled to pixels twice.
PRED_BOX_SLACK = 0.5


class VOCEvaluator:
    """Accumulates detections and ground truth image by image; computes per-class AP and mAP.

    Boxes are `[xmin, ymin, xmax, ymax]` (xyxy) in any consistent unit, pixels for VOC:
    continuous ones (pixel i spans [i - 1, i], as the pipeline and the Detector give them),
    whose IoU is the devkit's; or, with `plus_one`, the devkit's own pixel indices from 1,
    ends inclusive, to which it adds a pixel in each width and height.

    Ties. Equal scores keep the order in which detections were added (images in the order of
    the `add` calls, then the order within each image), as VOCevaldet.m's stable `sort` keeps
    the results file's order; voc_eval.py's unstable `argsort` leaves it unspecified. A
    detection equally close to two ground truths picks the first one given.

    A class with no positives (no non-difficult ground truth) has AP NaN and is left out of
    the mean; so is a class whose only ground truths are difficult.

    Args:
      num_classes: number of classes C; labels are in [0, C).
      iou_threshold: a detection matches when its IoU is at least this (as `VOCevaldet.m`).
        Not `config.eval.iou_threshold`, which is NMS's (0.45); VOC's matching is at 0.5.
      use_07_metric: which AP `compute()` reports as 'AP' / 'mAP': the VOC2007 11-point
        average (True) or the VOC2010+ area under the precision envelope (False). Both are
        always returned under their own keys as well.
      plus_one: use the devkit's pixel convention, width = xmax - xmin + 1 (and likewise for
        heights and intersections), for boxes in VOC's annotated pixel indices, from 1 and
        inclusive (xmin one more than the continuous box's: the IoU is the same).
      class_names: optional C names, used by `summary()`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        iou_threshold: float = 0.5,
        use_07_metric: bool = True,
        plus_one: bool = False,
        class_names: Sequence[str] | None = None,
    ):
        num_classes = check_positive_int("num_classes", num_classes)
        # A NumPy float is a Python one (np.float64) or converts to one; True is no threshold.
        if isinstance(iou_threshold, np.floating | np.integer):
            iou_threshold = iou_threshold.item()
        check_number("iou_threshold", iou_threshold, at_least=0, below=1)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have num_classes={num_classes} names, got {len(class_names)}"
            )
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.use_07_metric = bool(use_07_metric)
        self.plus_one = bool(plus_one)
        self.class_names = list(class_names) if class_names is not None else None
        # Chunks of (boxes, labels, difficult, image ids) and (boxes, scores, labels, image ids),
        # concatenated by `compute`; each starts with an empty chunk that fixes the dtypes.
        no_boxes, no_ids = np.zeros((0, 4)), np.zeros(0, np.int64)
        self._ground_truth = [(no_boxes, no_ids, np.zeros(0, bool), no_ids)]
        self._detections = [(no_boxes, np.zeros(0), no_ids, no_ids)]
        self._num_images = 0

    @property
    def num_images(self) -> int:
        """How many images have been added so far."""
        return self._num_images

    def add(self, gt_boxes, gt_labels, gt_difficult, pred_boxes, pred_scores, pred_labels):
        """Adds one image.

        Args:
          gt_boxes: (G, 4) ground-truth xyxy boxes (each min ≤ its max); G may be 0.
          gt_labels: (G,) integer class ids in [0, num_classes).
          gt_difficult: (G,) bool (or 0/1 integer) VOC difficult flags; None: none is.
          pred_boxes: (P, 4) detected xyxy boxes (each min ≤ its max); P may be 0.
          pred_scores: (P,) finite confidence scores, higher is more confident.
          pred_labels: (P,) integer class ids in [0, num_classes).
        """
        gt_boxes = _pixel_boxes("gt_boxes", _shaped("gt_boxes", gt_boxes, (None, 4), "(G, 4)"))
        self._warn_of_padding(gt_boxes, "pass only the image's real boxes")
        pred_boxes = _pixel_boxes(
            "pred_boxes", _shaped("pred_boxes", pred_boxes, (None, 4), "(P, 4)")
        )
        _check_same_units(gt_boxes, pred_boxes)
        if self.plus_one:
            _check_pixels_for_plus_one(gt_boxes, pred_boxes)
        per_gt, per_pred = (len(gt_boxes),), (len(pred_boxes),)
        if gt_difficult is None:
            gt_difficult = np.zeros(per_gt, bool)
        image_id = self._num_images
        self._append(
            (
                gt_boxes,
                self._labels("gt_labels", _shaped("gt_labels", gt_labels, per_gt, "(G,)")),
                check_flags("gt_difficult", _shaped("gt_difficult", gt_difficult, per_gt, "(G,)")),
                np.full(per_gt, image_id),
            ),
            (
                pred_boxes,
                _finite("pred_scores", _shaped("pred_scores", pred_scores, per_pred, "(P,)")),
                self._labels("pred_labels", _shaped("pred_labels", pred_labels, per_pred, "(P,)")),
                np.full(per_pred, image_id),
            ),
            num_new_images=1,
        )

    def add_normalized_batch(
        self,
        *,
        gt_boxes,
        gt_labels,
        gt_difficult,
        gt_mask,
        pred_boxes,
        pred_scores,
        pred_labels,
        pred_valid,
        image_size,
        valid,
    ):
        """Adds a batch in the on-device format: padded, masked, normalized yxyx boxes.

        Boxes are converted here to pixel xyxy, `[xmin * width, ymin * height, xmax * width,
        ymax * height]`, in float64 and without rounding. Only the entries whose mask is True,
        of the examples whose `valid` is True, are read: padding may hold anything.

        Args (`...` is the batch shape, taken from `valid`: (N,) or (devices, per_device)):
          gt_boxes: (..., M, 4) normalized [ymin, xmin, ymax, xmax] ground truth, finite,
            in [0, 1] (± 1e-3 for rounding).
          gt_labels: (..., M) integer class ids.
          gt_difficult: (..., M) bool difficult flags; None: none is.
          gt_mask: (..., M) bool, True for real ground-truth boxes.
          pred_boxes: (..., K, 4) normalized [ymin, xmin, ymax, xmax] detections, finite,
            in [-0.5, 1.5] (past the image by up to half its size; beyond, they are taken
            for pixel boxes).
          pred_scores: (..., K) scores.
          pred_labels: (..., K) integer class ids.
          pred_valid: (..., K) bool, True for real detections.
          image_size: (..., 2) original (height, width) in pixels.
          valid: (...) bool, False for the examples that only pad the batch.
        """
        valid = check_flags("valid", np.asarray(valid))
        batch = valid.shape
        image_size = _shaped("image_size", image_size, (*batch, 2), "(..., 2) like valid")
        gt_boxes = _shaped("gt_boxes", gt_boxes, (*batch, None, 4), "(..., M, 4)")
        pred_boxes = _shaped("pred_boxes", pred_boxes, (*batch, None, 4), "(..., K, 4)")
        per_gt, per_pred = (*batch, gt_boxes.shape[-2]), (*batch, pred_boxes.shape[-2])
        gt_labels = _shaped("gt_labels", gt_labels, per_gt, "(..., M) like gt_boxes")
        if gt_difficult is None:
            gt_difficult = np.zeros(per_gt, bool)
        gt_difficult = _shaped("gt_difficult", gt_difficult, per_gt, "(..., M) like gt_boxes")
        gt_mask = check_flags("gt_mask", _shaped("gt_mask", gt_mask, per_gt, "(..., M)"))
        pred_scores = _shaped("pred_scores", pred_scores, per_pred, "(..., K) like pred_boxes")
        pred_labels = _shaped("pred_labels", pred_labels, per_pred, "(..., K) like pred_boxes")
        pred_valid = check_flags(
            "pred_valid", _shaped("pred_valid", pred_valid, per_pred, "(..., K)")
        )

        # Flatten the batch dimensions and keep the real examples, then their real entries.
        example_ids = np.flatnonzero(valid.reshape(-1))
        pick = lambda array: array.reshape(valid.size, *array.shape[len(batch) :])[example_ids]
        gt_rows = np.nonzero(pick(gt_mask))  # (example, slot), in annotation order
        pred_rows = np.nonzero(pick(pred_valid))
        sizes = _finite("image_size", pick(image_size))
        if np.any(sizes <= 0):
            raise ValueError("image_size must hold positive (height, width) for valid examples")

        gt_boxes, pred_boxes = pick(gt_boxes)[gt_rows], pick(pred_boxes)[pred_rows]
        # Pixel boxes here would be scaled again and score a wrong mAP without a word. A
        # detector's own boxes may reach past the image (this library's are clipped).
        box_ops.check_normalized_yxyx("gt_boxes", gt_boxes)
        self._warn_of_padding(gt_boxes, "mark the real boxes with gt_mask")
        box_ops.check_normalized_yxyx("pred_boxes", pred_boxes, slack=PRED_BOX_SLACK)
        gt_boxes, pred_boxes = gt_boxes.astype(np.float64), pred_boxes.astype(np.float64)
        self._append(
            (
                _to_pixels(gt_boxes, sizes[gt_rows[0]]),
                self._labels("gt_labels", pick(gt_labels)[gt_rows]),
                check_flags("gt_difficult", pick(gt_difficult)[gt_rows]),
                self._num_images + gt_rows[0],
            ),
            (
                _to_pixels(pred_boxes, sizes[pred_rows[0]]),
                _finite("pred_scores", pick(pred_scores)[pred_rows]),
                self._labels("pred_labels", pick(pred_labels)[pred_rows]),
                self._num_images + pred_rows[0],
            ),
            num_new_images=len(example_ids),
        )

    def compute(self) -> dict:
        """Evaluates everything added so far.

        Returns:
          A dict with
          'AP': (C,) float64 per-class AP of the configured metric (`use_07_metric`), NaN for
            a class with no positives; 'mAP': its mean over the classes that have positives
            (NaN if none has);
          'AP_11point' / 'mAP_11point' and 'AP_area' / 'mAP_area': the same for the VOC2007
            11-point metric and for the VOC2010+ area metric, both always present;
          'precision', 'recall': lists of C float64 arrays, the precision and recall after
            each counted detection of the class in score order (detections that hit a
            difficult ground truth are left out); recall is NaN for a class with no positives;
          'num_positives': (C,) int64 number of non-difficult ground truths per class.
        """
        gt_boxes, gt_labels, gt_difficult, gt_image = _concatenate(self._ground_truth)
        pred_boxes, pred_scores, pred_labels, pred_image = _concatenate(self._detections)
        best_gt, best_iou = average_precision.best_ground_truth(
            pred_boxes,
            # Image-major keys: detections come image by image, so the lookups stay local.
            pred_image * self.num_classes + pred_labels,
            gt_boxes,
            gt_image * self.num_classes + gt_labels,
            offset=1.0 if self.plus_one else 0.0,
        )
        hit = best_iou >= self.iou_threshold
        ignored = np.zeros_like(hit)
        ignored[hit] = gt_difficult[best_gt[hit]]
        # Stable sort: equal scores keep insertion order (see the class docstring).
        by_score = np.argsort(-pred_scores, kind="stable")
        claims = by_score[(hit & ~ignored)[by_score]]
        # The first claim of a ground truth in score order takes it; later ones are duplicates.
        _, first_claims = np.unique(best_gt[claims], return_index=True)
        true_positive = np.zeros(len(pred_scores), dtype=bool)
        true_positive[claims[first_claims]] = True

        counted = by_score[~ignored[by_score]]
        counted_labels = pred_labels[counted]
        num_positives = np.bincount(gt_labels[~gt_difficult], minlength=self.num_classes)
        precisions, recalls = [], []
        ap_11point = np.full(self.num_classes, np.nan)
        ap_area = np.full(self.num_classes, np.nan)
        for label in range(self.num_classes):
            class_detections = counted[counted_labels == label]  # in score order
            true_positives = np.cumsum(true_positive[class_detections])
            precisions.append(true_positives / np.arange(1, len(class_detections) + 1))
            recalls.append(np.full(len(class_detections), np.nan))
            if num_positives[label] > 0:
                recalls[-1] = true_positives / num_positives[label]
                ap_11point[label] = average_precision.ap_11point(recalls[-1], precisions[-1])
                ap_area[label] = average_precision.ap_area(recalls[-1], precisions[-1])

        ap = ap_11point if self.use_07_metric else ap_area
        return {
            "AP": ap,
            "mAP": average_precision.mean_over_defined(ap),
            "AP_11point": ap_11point,
            "mAP_11point": average_precision.mean_over_defined(ap_11point),
            "AP_area": ap_area,
            "mAP_area": average_precision.mean_over_defined(ap_area),
            "precision": precisions,
            "recall": recalls,
            "num_positives": num_positives,
        }

    def summary(self, results: dict | None = None) -> str:
        """A text table of per-class AP (both metrics) and positives, from ``results`` of
        `compute()` (computed now when not given)."""
        results = self.compute() if results is None else results
        if len(results["AP_area"]) != self.num_classes:
            raise ValueError(
                f"results hold {len(results['AP_area'])} classes, but this evaluator has "
                f"num_classes={self.num_classes}: pass the results of its own compute()."
            )
        names = self.class_names or [str(label) for label in range(self.num_classes)]
        width = max(len(name) for name in [*names, "mAP"])
        lines = [f"{'class':<{width}}  AP07-11pt  AP-area  positives"]
        for name, ap07, ap, positives in zip(
            names, results["AP_11point"], results["AP_area"], results["num_positives"], strict=True
        ):
            lines.append(f"{name:<{width}}  {ap07:9.4f}  {ap:7.4f}  {positives:9d}")
        lines.append(f"{'mAP':<{width}}  {results['mAP_11point']:9.4f}  {results['mAP_area']:7.4f}")
        return "\n".join(lines)

    def _warn_of_padding(self, gt_boxes: np.ndarray, what_to_do: str) -> None:
        """Warns of all-zero ground-truth boxes, most likely a padded batch's filler: as
        positives that no detection can match, they lower their class's AP. (A warning, not
        an error: an annotation of a point at the corner is one too. With ``plus_one`` it is
        a 1×1 box.)"""
        padding = ~gt_boxes.any(axis=-1)
        if padding.any() and not self.plus_one:
            warnings.warn(
                f"gt_boxes holds {int(padding.sum())} all-zero box(es), [0, 0, 0, 0]: padding, "
                "not objects? They count as objects that no detection can match, which "
                f"lowers their class's AP: {what_to_do}.",
                stacklevel=3,
            )

    def _labels(self, name: str, labels: np.ndarray) -> np.ndarray:
        """Checks integer class ids in [0, num_classes); returns them as int64."""
        if labels.size and labels.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)  # a copy: the caller may reuse its buffers
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)]
            raise ValueError(f"{name} must be in [0, {self.num_classes}), got {bad[:5]}")
        return labels

    def _append(self, ground_truth, detections, num_new_images: int):
        self._ground_truth.append(ground_truth)
        self._detections.append(detections)
        self._num_images += num_new_images


def _to_pixels(boxes, sizes):
    """(N, 4) normalized [ymin, xmin, ymax, xmax] and (N, 2) (height, width) → pixel xyxy."""
    return box_ops.normalized_yxyx_to_pixel_xyxy(boxes, sizes[:, 0], sizes[:, 1])


def _concatenate(chunks):
    """Concatenates a list of per-chunk field tuples field by field."""
    return tuple(np.concatenate(field) for field in zip(*chunks, strict=True))


def _shaped(name, value, shape, description):
    """`value` as an array of `shape` (None: any size), else ValueError naming `name`."""
    array = np.asarray(value)
    if array.shape == shape:
        return array
    if array.size == 0 and array.ndim == 1 and len(shape) > 1:
        array = array.reshape(0, *shape[1:])  # `[]` for an image without boxes
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {description}, got {array.shape}")
    return array


def _pixel_boxes(name, array):
    """`array` of (K, 4) pixel [xmin, ymin, xmax, ymax] boxes as float64, else ValueError for
    a value that is not finite or a max below its min (boxes in another format, such as
    [x, y, w, h], which would silently score 0)."""
    array = _finite(name, array)
    inverted = box_ops.inverted(array)
    if inverted.any():
        raise ValueError(
            f"{name} must be [xmin, ymin, xmax, ymax] boxes; {int(inverted.sum())} have a max "
            f"below their min, such as {array[inverted][0].tolist()}"
        )
    return array


def _check_same_units(gt_boxes, pred_boxes) -> None:
    """Refuses one image's ground truth and detections in different units, one side within
    [0, 1] (normalized) and the other well past it (pixels), which would score 0 silently."""
    if not (gt_boxes.size and pred_boxes.size):
        return
    largest = {"gt_boxes": gt_boxes.max(), "pred_boxes": pred_boxes.max()}
    for small, large in (("gt_boxes", "pred_boxes"), ("pred_boxes", "gt_boxes")):
        if largest[small] <= 1.0 + box_ops.NORMALIZED_SLACK and largest[large] > 2.0:
            raise ValueError(
                f"{small} are within [0, 1] (normalized) but {large} reach {largest[large]:g} "
                "(pixels): give both in the same units, such as pixels "
                "(yolojax.normalized_yxyx_to_pixel_xyxy(boxes, height, width) converts "
                "normalized yxyx boxes)."
            )


def _check_pixels_for_plus_one(gt_boxes, pred_boxes) -> None:
    """Refuses normalized boxes with ``plus_one``: a pixel added to each width and height of
    boxes within [0, 1] makes every pair overlap (boxes 0.6 apart at IoU 0.14), which would
    inflate the mAP silently. Boxes within [0, 1] whose coordinates are all whole numbers
    are pixel boxes at the corner (an annotated point), which the convention is for."""
    # Within [0, 1]: the ground truth (a detector's unclipped boxes may reach past it).
    if not gt_boxes.size or gt_boxes.max() > 1.0 + box_ops.NORMALIZED_SLACK:
        return
    boxes = np.concatenate([gt_boxes, pred_boxes])
    if (boxes != np.round(boxes)).any():
        raise ValueError(
            "plus_one=True takes pixel boxes (it adds a pixel to each width and height, the "
            "devkit's convention for integer pixel coordinates), but these boxes are all "
            "within [0, 1] (normalized), where every pair would overlap: convert them with "
            "yolojax.normalized_yxyx_to_pixel_xyxy(boxes, height, width), or pass "
            "plus_one=False."
        )


def _finite(name, array):
    """`array` as float64, else ValueError if any value is NaN or infinite."""
    array = array.astype(np.float64)  # a copy: the caller may reuse its buffers
    check_finite(name, array)
    return array
