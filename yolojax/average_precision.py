"""Matching detections to ground truth and the VOC average precisions, on whole arrays.

The math behind `yolojax.evaluation.VOCEvaluator` (whose docstring gives the protocol): each
detection's best ground truth over all (detection, ground truth) pairs of its image and class
at once, the devkit's IoU bit for bit, and the 11-point and area APs of one class's
precision-recall points.
"""

import numpy as np

# `voc_eval.py`'s thresholds, `np.arange(0., 1.1, 0.1)`, as in the Python reproductions most
# published numbers come from. Some are a hair above the decimal value (0.30000000000000004,
# 0.6000000000000001, 0.7000000000000001), so a recall of exactly 0.3, 0.6 or 0.7 (a class
# whose positives are a multiple of 10 or 5) does not reach that point. MATLAB's `0:0.1:1` in
# `VOCevaldet.m` builds its second half from the end, so there 0.6 and 0.7 are the decimal
# values: on such a class the two devkits' APs can differ by 1/11 of a precision.
VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def best_ground_truth(pred_boxes, pred_keys, gt_boxes, gt_keys, offset):
    """For each detection, the highest-IoU ground truth with the same key (class and image).

    Args:
      pred_boxes: (P, 4) xyxy; pred_keys: (P,) int.
      gt_boxes: (G, 4) xyxy; gt_keys: (G,) int.
      offset: 1.0 for the devkit's +1 pixel widths, else 0.0.

    Returns:
      best_gt: (P,) index into the ground truth, the first one on an IoU tie; 0 where a
        detection has no ground truth with its key (then best_iou is -inf).
      best_iou: (P,) float64 IoU with it.
    """
    # Gather every (detection, same-key ground truth) pair, grouped by detection, with the
    # ground truths of a key in the order given (the devkit's argmax takes the first on a tie).
    gt_order = np.argsort(gt_keys, kind="stable")
    sorted_keys = gt_keys[gt_order]
    first = np.searchsorted(sorted_keys, pred_keys, side="left")
    count = np.searchsorted(sorted_keys, pred_keys, side="right") - first
    pair_start = np.cumsum(count) - count  # where each detection's pairs begin
    num_pairs = int(count.sum())
    pair_pred = np.repeat(np.arange(len(pred_keys)), count)
    pair_gt = gt_order[np.arange(num_pairs) - np.repeat(pair_start - first, count)]
    iou = _devkit_iou(pred_boxes[pair_pred], gt_boxes[pair_gt], offset)

    best_gt = np.zeros(len(pred_keys), dtype=np.int64)
    best_iou = np.full(len(pred_keys), -np.inf)
    has_gt = count > 0
    if num_pairs:
        starts = pair_start[has_gt]
        best_iou[has_gt] = np.maximum.reduceat(iou, starts)
        is_best = iou == best_iou[pair_pred]
        first_best = np.minimum.reduceat(np.where(is_best, np.arange(num_pairs), num_pairs), starts)
        best_gt[has_gt] = pair_gt[first_best]
    return best_gt, best_iou


def _devkit_iou(boxes1, boxes2, offset):
    """Elementwise IoU of (N, 4) xyxy boxes with the devkit's operations, in its order, so
    that thresholds and ties come out bit for bit the same. Pairs that do not overlap (the
    devkit's ``iw<=0 | ih<=0``) get -inf: the devkit never considers them, so they match no
    detection even at an ``iou_threshold`` of 0."""
    inter_w = np.minimum(boxes2[:, 2], boxes1[:, 2]) - np.maximum(boxes2[:, 0], boxes1[:, 0])
    inter_h = np.minimum(boxes2[:, 3], boxes1[:, 3]) - np.maximum(boxes2[:, 1], boxes1[:, 1])
    inter_w, inter_h = inter_w + offset, inter_h + offset
    overlaps = (inter_w > 0) & (inter_h > 0)
    intersection = np.where(overlaps, inter_w * inter_h, 0.0)
    union = (
        (boxes1[:, 2] - boxes1[:, 0] + offset) * (boxes1[:, 3] - boxes1[:, 1] + offset)
        + (boxes2[:, 2] - boxes2[:, 0] + offset) * (boxes2[:, 3] - boxes2[:, 1] + offset)
        - intersection
    )
    return np.divide(intersection, union, out=np.full_like(union, -np.inf), where=overlaps)


def ap_11point(recall, precision):
    """VOC2007: mean over the 11 recall thresholds of the best precision at recall >= t."""
    # Best precision at or after each position; recall is nondecreasing, so the first
    # position with recall >= t sees the best precision over all of them (0 if none).
    envelope = precision_envelope(recall, precision)[1][1:]  # (D + 1,): 0 past the end
    points = envelope[np.searchsorted(recall, VOC07_RECALL_THRESHOLDS, side="left")]
    # cumsum adds left to right like the devkit's loop (np.sum would pair terms up); its
    # rounding makes 11 precisions of 1 sum to 1 + 2e-16, which the min takes back to 1.
    return min(float(np.cumsum(points / 11.0)[-1]), 1.0)


def precision_envelope(recall, precision) -> tuple[np.ndarray, np.ndarray]:
    """The VOC2010+ precision envelope of one class's precision-recall points.

    Args:
      recall, precision: ``(D,)`` after each counted detection in score order, as in
        :meth:`VOCEvaluator.compute`'s 'recall' and 'precision'.

    Returns:
      ``(recall, envelope)``, each ``(D + 2,)``: the recalls framed by 0 and 1, and at each
      the best precision at that recall or beyond (0 past the last detection). The area AP is
      the area under this curve drawn as steps: ``envelope[i + 1]`` over
      ``(recall[i], recall[i + 1]]``.
    """
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    return recall, envelope


def ap_area(recall, precision):
    """VOC2010+: area under the precision envelope (precision made nonincreasing)."""
    recall, envelope = precision_envelope(recall, precision)
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def mean_over_defined(ap):
    defined = ap[~np.isnan(ap)]
    return float(defined.mean()) if defined.size else float("nan")
