"""A straightforward PASCAL VOC evaluation, one Python iteration per detection, devkit style.

A transcription of `voc_eval` and `voc_ap` from `voc_eval.py` (the Python port of the
VOCdevkit's `VOCevaldet.m`, as in py-faster-rcnn and its descendants), kept deliberately
naive and sharing no code with `yolojax.evaluation`: it is the independent truth that
`tests/evaluation_test.py` and `benchmarks/evaluator.py` compare `VOCEvaluator` against.

Departures from the devkit, each one documented by `VOCEvaluator`:
- detections are sorted with a stable sort (the devkit's `np.argsort(-confidence)` leaves the
  order of equal scores unspecified), so ties are in input order;
- `plus_one` chooses the devkit's +1 pixel widths (the devkit always adds 1);
- a class with no positives gets AP NaN (the devkit divides by zero);
- a detection matches at an IoU of at least `ovthresh`, as the MATLAB devkit's `VOCevaldet.m`
  (`ovmax>=VOCopts.minoverlap`); `voc_eval.py` itself requires strictly more.

An image is a tuple `(gt_boxes (G, 4), gt_labels (G,), gt_difficult (G,), pred_boxes (P, 4),
pred_scores (P,), pred_labels (P,))`, boxes as [xmin, ymin, xmax, ymax].
"""

import numpy as np


def voc_ap(rec, prec, use_07_metric=False):
    """The devkit's AP from recall and precision arrays (11-point or area)."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def voc_eval(images, classname, ovthresh=0.5, plus_one=True):
    """The devkit's `voc_eval` for one class.

    Returns:
      rec, prec: after each detection of the class in score order, as the devkit computes
        them (detections that hit a difficult ground truth repeat the previous values).
      counted: bool per sorted detection, False where it hit a difficult ground truth.
      npos: number of non-difficult ground truths.
    """
    offset = 1.0 if plus_one else 0.0
    class_recs = {}
    npos = 0
    image_ids, confidence, boxes = [], [], []
    for imagename, (gt_boxes, gt_labels, gt_difficult, bb, scores, labels) in enumerate(images):
        R = np.asarray(gt_labels) == classname
        bbox = np.asarray(gt_boxes, dtype=float).reshape(-1, 4)[R]
        difficult = np.asarray(gt_difficult, dtype=bool)[R]
        det = [False] * len(bbox)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}
        mine = np.asarray(labels) == classname
        image_ids.extend([imagename] * int(mine.sum()))
        confidence.extend(np.asarray(scores, dtype=float)[mine])
        boxes.extend(np.asarray(bb, dtype=float).reshape(-1, 4)[mine])

    confidence = np.array(confidence, dtype=float)
    BB = np.array(boxes, dtype=float).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]

    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + offset, 0.0)
            ih = np.maximum(iymax - iymin + offset, 0.0)
            inters = iw * ih
            uni = (
                (bb[2] - bb[0] + offset) * (bb[3] - bb[1] + offset)
                + (BBGT[:, 2] - BBGT[:, 0] + offset) * (BBGT[:, 3] - BBGT[:, 1] + offset)
                - inters
            )
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)

        if ovmax >= ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0

    counted = (tp + fp) > 0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    with np.errstate(divide="ignore", invalid="ignore"):  # npos == 0: NaN recall
        rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, counted, int(npos)


def voc_eval_all(images, num_classes, ovthresh=0.5, plus_one=True):
    """Per-class (AP 11-point, AP area) arrays over `num_classes`, NaN without positives."""
    ap_07 = np.full(num_classes, np.nan)
    ap_area = np.full(num_classes, np.nan)
    for classname in range(num_classes):
        rec, prec, _, npos = voc_eval(images, classname, ovthresh, plus_one)
        if npos > 0:
            ap_07[classname] = voc_ap(rec, prec, use_07_metric=True)
            ap_area[classname] = voc_ap(rec, prec, use_07_metric=False)
    return ap_07, ap_area
