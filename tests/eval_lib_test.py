"""eval_lib.evaluate reports the mAP of the model's boxes on the eval split's annotations.

The model is set to output known boxes (its output layer's kernel zeroed, so its bias is
the output): every cell of the grid detects itself, with a different score per cell and
class. The expected mAP comes from the devkit-style loop of benchmarks/voc_reference.py,
fed the test split's annotations read with TFDS directly and those cell boxes in pixels.
A mix-up anywhere between the two (labels, box coordinate order, pixel scaling, padded
examples, difficult flags) changes the mAP.
"""

import numpy as np
import pytest

from benchmarks.voc_reference import voc_eval_all
from tests import tiny
from yolojax import distributed, eval_lib, train_lib
from yolojax.config import resolve_num_classes
from yolojax.data import pipeline

GRID, SIZE, NUM_TEST = 4, 64, 20


def _stored_test_examples(data_config) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each test image's (boxes as pixel xyxy, labels, difficult), in stored order."""
    examples = []
    for example in tiny.stored_split(data_config, "test"):
        objects = example["objects"]
        ymin, xmin, ymax, xmax = np.stack(objects["bbox"]).reshape(-1, 4).T * SIZE
        examples.append(
            (
                np.stack([xmin, ymin, xmax, ymax], axis=1),
                np.asarray(objects["label"]),
                np.asarray(objects["is_difficult"], bool),
            )
        )
    return examples


def test_the_reported_map_is_that_of_the_models_boxes_on_the_stored_annotations(tmp_path):
    config = tiny.tiny_config(str(tmp_path / "tfds"), num_test=NUM_TEST)
    config.model.head = "seed"  # one Dense to the S·S·(C + 5B) outputs: a bias per cell
    config.eval.batch_size = 8  # 20 images: the last batch is padded with 4
    info = pipeline.get_dataset_info(config.data)
    resolve_num_classes(config, info.class_names)
    num_classes, num_boxes = config.model.num_classes, config.model.num_boxes

    # Per cell: box 0 is the cell itself (centre offset 0.5, size 1 cell), box 1 a box of 2×2
    # cells around the same centre; their confidences and the class scores differ per cell.
    # (Neither overlaps another box of its size by IoU 0.5 or more: NMS keeps them all.)
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, (GRID, GRID, num_boxes))
    class_scores = rng.uniform(0.1, 1.0, (GRID, GRID, num_classes))
    sizes = [1.0, 2.0]
    bias = np.zeros((GRID, GRID, num_classes + 5 * num_boxes), np.float32)
    bias[..., :num_classes] = class_scores
    for b, size in enumerate(sizes):
        fields = np.broadcast_to([0.5, 0.5, size, size], (GRID, GRID, 4))
        bias[..., num_classes + 5 * b : num_classes + 5 * b + 5] = np.concatenate(
            [confidence[..., b : b + 1], fields], axis=-1
        )
    model, state, _ = train_lib.initial_state(config, config.train.batch_size)
    head = state.params["head"]
    state = state.replace(
        params={
            **state.params,
            "head": {"kernel": np.zeros_like(head["kernel"]), "bias": bias.reshape(-1)},
        }
    )
    mesh = distributed.mesh()
    results = eval_lib.evaluate(
        eval_lib.make_eval_step(model, config, mesh),
        distributed.replicate(state, mesh),
        pipeline.make_eval_iterator(config.data, global_batch_size=8),
        config,
    )

    cell = SIZE / GRID
    detections = []
    for row, col, b in np.ndindex(GRID, GRID, num_boxes):
        centre_x, centre_y, half = (col + 0.5) * cell, (row + 0.5) * cell, sizes[b] * cell / 2
        box = np.clip([centre_x - half, centre_y - half, centre_x + half, centre_y + half], 0, SIZE)
        scores = confidence[row, col, b] * class_scores[row, col]
        detections += [(box, score, label) for label, score in enumerate(scores)]
    # As NMS returns them: by score, the first max_detections.
    detections = sorted(detections, key=lambda detection: -detection[1])
    detections = detections[: config.eval.max_detections]
    boxes, scores, labels = (np.array(column) for column in zip(*detections, strict=True))
    images = [
        (gt_boxes, gt_labels, difficult, boxes, scores, labels)
        for gt_boxes, gt_labels, difficult in _stored_test_examples(config.data)
    ]
    assert len(images) == NUM_TEST and results["num_images"] == NUM_TEST
    ap_07, ap_area = voc_eval_all(images, num_classes, plus_one=False)
    assert np.nanmean(ap_area) > 0.005  # some boxes fit objects (most do not: 100 an image)
    assert results["mAP"] == pytest.approx(np.nanmean(ap_07), abs=1e-6)
    assert results["mAP_area"] == pytest.approx(np.nanmean(ap_area), abs=1e-6)
    np.testing.assert_allclose(results["AP_area"], ap_area, atol=1e-6)
    assert results["num_detections"] == NUM_TEST * config.eval.max_detections
