"""eval_lib.evaluate reports the mAP of the model's boxes on the eval split's annotations.

The model is set to output known boxes (its output layer's kernel zeroed, so its bias is
the output): every cell of the grid detects itself, with a different score per cell and
class. The expected mAP comes from the devkit-style loop of benchmarks/voc_reference.py,
fed the test split's annotations read with TFDS directly and those cell boxes in pixels.
A mix-up anywhere between the two (labels, box coordinate order, pixel scaling, padded
examples, difficult flags) changes the mAP.
"""

import ast
import collections
import errno
import io
import json
import shlex
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.voc_reference import voc_eval_all
from configs import voc
from tests import tiny
from yolojax import checkpoints, distributed, eval_lib, train_lib, voc_results
from yolojax.config import resolve_num_classes
from yolojax.data import pipeline
from yolojax.data.testing import VocImage, VocObject, write_voc_folder
from yolojax.detector import Detector

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


def _known_output_model(tmp_path):
    """``(config, model, state, detections)``: a model whose every image's detections are
    ``detections``, ``[(pixel xyxy box, score, label)]`` by score, as NMS returns them."""
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
    cell = SIZE / GRID
    detections = []
    for row, col, b in np.ndindex(GRID, GRID, num_boxes):
        centre_x, centre_y, half = (col + 0.5) * cell, (row + 0.5) * cell, sizes[b] * cell / 2
        box = np.clip([centre_x - half, centre_y - half, centre_x + half, centre_y + half], 0, SIZE)
        scores = confidence[row, col, b] * class_scores[row, col]
        detections += [(box, score, label) for label, score in enumerate(scores)]
    # As NMS returns them: by score, the first max_detections.
    detections = sorted(detections, key=lambda detection: -detection[1])
    return config, model, state, detections[: config.eval.max_detections]


def _in_devkit_pixels(xyxy: np.ndarray) -> np.ndarray:
    """Continuous pixel xyxy boxes (pixel i spans [i - 1, i]) in the VOC devkit's
    convention: pixel indices from 1, ends inclusive."""
    return np.asarray(xyxy, float) + np.array([1, 1, 0, 0])


@pytest.mark.parametrize("given", ["train state", "variables"])
def test_the_reported_map_is_that_of_the_models_boxes_on_the_stored_annotations(given, tmp_path):
    config, model, state, detections = _known_output_model(tmp_path)
    if given == "variables":  # as model.init gives them, without an optimizer
        state = {"params": state.params, "batch_stats": state.batch_stats}
    mesh = distributed.mesh()
    results = eval_lib.evaluate(
        eval_lib.make_eval_step(model, config, mesh),
        distributed.replicate(state, mesh),
        pipeline.make_eval_iterator(config.data, global_batch_size=8),
        config,
    )

    # The devkit's loop, on the boxes in its convention, with its +1 pixel widths.
    boxes, scores, labels = (np.array(column) for column in zip(*detections, strict=True))
    images = [
        (gt_boxes, gt_labels, difficult, boxes, scores, labels)
        for gt_boxes, gt_labels, difficult in _stored_test_examples(config.data)
    ]
    devkit_images = [
        (_in_devkit_pixels(gt), gt_labels, difficult, _in_devkit_pixels(found), *rest)
        for gt, gt_labels, difficult, found, *rest in images
    ]
    assert len(images) == NUM_TEST and results["num_images"] == NUM_TEST
    ap_07, ap_area = voc_eval_all(devkit_images, config.model.num_classes, plus_one=True)
    assert np.nanmean(ap_area) > 0.005  # some boxes fit objects (most do not: 100 an image)
    # The +1 pixel on the continuous boxes themselves scores otherwise: the test can tell.
    _, other_area = voc_eval_all(images, config.model.num_classes, plus_one=True)
    assert abs(np.nanmean(other_area) - np.nanmean(ap_area)) > 1e-4
    assert results["mAP"] == pytest.approx(np.nanmean(ap_07), abs=1e-6)
    assert results["mAP_area"] == pytest.approx(np.nanmean(ap_area), abs=1e-6)
    np.testing.assert_allclose(results["AP_area"], ap_area, atol=1e-6)
    assert results["num_detections"] == NUM_TEST * config.eval.max_detections
    assert results["num_nonfinite"] == 0


def test_outputs_that_are_not_finite_are_counted_and_said_not_taken_for_no_objects(tmp_path):
    # Clipped, NaN outputs score 0: a diverged model was reported as mAP 0 (and a NaN loss),
    # as if it saw no objects, without a word of why.
    config, _, state, _ = _known_output_model(tmp_path)
    head = state.params["head"]
    state = state.replace(params={**state.params, "head": {**head, "bias": head["bias"] * np.nan}})
    workdir = tmp_path / "run"
    tiny.save_checkpoint(config, state, workdir)

    results = eval_lib.evaluate_checkpoint(config, workdir)

    # The 4 images padding the last batch are not counted.
    assert results["num_nonfinite"] == NUM_TEST == 20
    assert results["mAP"] == 0 and results["num_detections"] == 0
    report = eval_lib.report(results, config.data)
    assert report.endswith(
        "The model's outputs were NaN or infinite for 20 of the 20 images, which count as "
        "detecting nothing: its weights hold NaN or infinity (from a training that "
        "diverged?), or its bfloat16 activations overflowed (try model.dtype='float32')."
    )
    saved = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert saved["num_nonfinite"] == 20


@pytest.mark.parametrize("train_on_difficult", [False, True])
def test_the_reported_loss_is_the_reference_loss_of_the_real_images(train_on_difficult, tmp_path):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_reference  # needs torch

    config, model, state, _ = _known_output_model(tmp_path)
    config.data.train_on_difficult = train_on_difficult  # which objects the loss counts
    mesh = distributed.mesh()
    results = eval_lib.evaluate(  # 20 images in batches of 8: the last one padded with 4
        eval_lib.make_eval_step(model, config, mesh),
        distributed.replicate(state, mesh),
        pipeline.make_eval_iterator(config.data, global_batch_size=8),
        config,
    )

    # The PyTorch reference's loss of all 20 at once (a mean over them), on the stored
    # annotations: the model's output is its head's bias, for every image.
    examples = _stored_test_examples(config.data)
    most = max(len(labels) for _, labels, _ in examples)
    boxes, labels = np.zeros((NUM_TEST, most, 4)), np.zeros((NUM_TEST, most), np.int64)
    counted = np.zeros((NUM_TEST, most), bool)
    for i, (xyxy, image_labels, difficult) in enumerate(examples):
        n = len(image_labels)
        boxes[i, :n] = xyxy[:, [1, 0, 3, 2]] / SIZE  # pixel xyxy → normalized yxyx
        labels[i, :n] = image_labels
        counted[i, :n] = True if train_on_difficult else ~difficult
    assert not counted.all() and counted.any()  # difficult objects and padding to leave out
    grid = torch_reference.encode_targets(
        torch.tensor(boxes, dtype=torch.float32),
        torch.tensor(labels),
        torch.tensor(counted),
        grid_size=GRID,
        num_classes=config.model.num_classes,
    )
    output = torch.tensor(state.params["head"]["bias"]).reshape(1, GRID, GRID, -1)
    _, expected = torch_reference.yolo_loss(
        output.expand(NUM_TEST, -1, -1, -1),
        grid,
        num_classes=config.model.num_classes,
        num_boxes=config.model.num_boxes,
        **config.loss,
    )
    assert set(results["loss"]) == {"loss", "coord", "object", "noobj", "class"}
    for term, value in results["loss"].items():
        assert value == pytest.approx(float(expected[term]), rel=1e-5), term


def _write_voc_results(config, state, tmp_path):
    """(evaluate_checkpoint's results, the files' detections ``{image id: [(pixel xyxy box,
    score, label)]}``, the test split's image ids in stored order) for ``state`` saved as
    a run's checkpoint."""
    workdir, folder = tmp_path / "run", tmp_path / "results"
    tiny.save_checkpoint(config, state, workdir)

    results = eval_lib.evaluate_checkpoint(config, workdir, voc_results_folder=folder)

    class_names = pipeline.get_dataset_info(config.data).class_names
    # comp3: a model trained from scratch, on the dataset's data alone.
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        f"comp3_det_test_{name}.txt" for name in class_names
    )
    # The devkit's lines: <image id> <score> <xmin> <ymin> <xmax> <ymax>, in pixels.
    written = collections.defaultdict(list)
    for label, name in enumerate(class_names):
        for line in (folder / f"comp3_det_test_{name}.txt").read_text().splitlines():
            image_id, score, *box = line.split()
            written[image_id].append((np.array(box, float), float(score), label))
    stored = tiny.stored_split(config.data, "test")
    ids = [Path(example["image/filename"].decode()).stem for example in stored]
    assert set(written) <= set(ids) and len(ids) == NUM_TEST  # images without any: no line
    return results, written, ids


def test_voc_results_enter_comp4_with_imagenet_weights_and_comp3_without():
    # VOC's rules: comp3 for methods trained on VOC data alone, comp4 with any other data.
    assert voc_results.competition(voc.get_config("resnet50").model) == "comp4"
    assert voc_results.competition(voc.get_config("vgg16,report").model) == "comp4"
    assert voc_results.competition(voc.get_config("darknet").model) == "comp3"


def _disk_full_at_file(number: int, monkeypatch) -> None:
    """The disk fills as the ``number``-th temporary file is made (atomic_files' writes)."""
    mkstemp, created = tempfile.mkstemp, []

    def full_at_that_file(*args, **kwargs):
        created.append(args)
        if len(created) == number:
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_at_that_file)


def test_voc_results_that_fill_the_disk_leave_the_earlier_set_whole(tmp_path, monkeypatch):
    # A full disk at the third class's file left the first two of the new evaluation beside
    # the earlier one's others: a mixed set, which a submission would score as one.
    names = ["cat", "dog", "bird", "fish"]
    one_box = np.array([[1.0, 2.0, 30.0, 40.0]])

    def write(score):
        detections = {"img": (np.repeat(one_box, 4, axis=0), [score] * 4, [0, 1, 2, 3])}
        return voc_results.write_voc_results(tmp_path, detections, names, competition="comp3")

    paths = write(0.9)
    earlier = {path: path.read_text() for path in paths}
    _disk_full_at_file(3, monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write(0.5)
    assert {path: path.read_text() for path in paths} == earlier
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temporary file left


def test_an_evaluation_that_fills_the_disk_leaves_the_earlier_ones_files_together(
    tmp_path, monkeypatch
):
    # A full disk at pr_curves.png left the new metrics.json beside an earlier evaluation's
    # curves, two evaluations' files read as one's.
    config, _, state, _ = _known_output_model(tmp_path)
    workdir = tmp_path / "run"
    tiny.save_checkpoint(config, state, workdir)
    eval_lib.evaluate_checkpoint(config, workdir)
    files = [workdir / "eval" / "metrics.json", workdir / "eval" / "pr_curves.png"]
    earlier = [path.read_bytes() for path in files]
    _disk_full_at_file(2, monkeypatch)
    config.eval.score_threshold = 0.5  # another evaluation, which metrics.json records
    with pytest.warns(UserWarning, match=r"save .*metrics\.json and .*pr_curves\.png: .*space"):
        results = eval_lib.evaluate_checkpoint(config, workdir)
    assert results["saved"] == []
    assert [path.read_bytes() for path in files] == earlier
    assert sorted(path.name for path in (workdir / "eval").iterdir()) == sorted(
        path.name for path in files
    )


def test_voc_results_files_score_as_reported_under_the_devkit_loop(tmp_path):
    config, _, state, detections = _known_output_model(tmp_path)
    results, written, ids = _write_voc_results(config, state, tmp_path)
    assert sorted(written) == sorted(ids)  # the same boxes in every image
    # Every image gets the model's boxes in the devkit's pixels, to the files' precision.
    expected = sorted((tuple(_in_devkit_pixels(box)), label) for box, _, label in detections)
    for image_id in ids:
        got = sorted(written[image_id], key=lambda d: (tuple(np.round(d[0], 2)), d[2]))
        assert len(got) == len(expected)
        np.testing.assert_allclose([d[0] for d in got], [box for box, _ in expected], atol=1e-3)
    # And scored by the devkit-style loop under those names, against the annotations in
    # its convention, they give the reported mAP.
    images = [
        (
            _in_devkit_pixels(gt_boxes),
            gt_labels,
            difficult,
            *map(np.array, zip(*written[image_id], strict=True)),
        )
        for image_id, (gt_boxes, gt_labels, difficult) in zip(
            ids, _stored_test_examples(config.data), strict=True
        )
    ]
    ap_07, _ = voc_eval_all(images, config.model.num_classes, plus_one=True)
    assert results["mAP"] == pytest.approx(np.nanmean(ap_07), abs=1e-4)


def test_voc_results_files_name_each_image_by_its_file(tmp_path):
    # A model whose detections differ per image: each file line must be under the name of
    # the image the Detector, given that image alone, finds the box in.
    config = tiny.tiny_config(str(tmp_path / "tfds"), num_test=NUM_TEST)
    info = pipeline.get_dataset_info(config.data)
    resolve_num_classes(config, info.class_names)
    model, state, _ = train_lib.initial_state(config, config.train.batch_size)
    _, written, ids = _write_voc_results(config, state, tmp_path)
    assert 5 <= len(written) < len(ids)  # some images have detections, not all: they differ

    detector = Detector(
        model,
        train_lib.model_variables(state),
        config,
        info.class_names,
        score_threshold=config.eval.score_threshold,
    )
    for image_id, example in zip(ids, tiny.stored_split(config.data, "test"), strict=True):
        found = detector(np.asarray(Image.open(io.BytesIO(example["image"])).convert("RGB")))
        lines = sorted(written.get(image_id, []), key=lambda line: -line[1])
        order = np.argsort(-found.scores, kind="stable")
        assert len(lines) == len(order)
        if not lines:
            continue
        np.testing.assert_allclose([line[1] for line in lines], found.scores[order], atol=2e-6)
        np.testing.assert_allclose(
            [line[0] for line in lines], _in_devkit_pixels(found.boxes[order]), atol=2e-3
        )
        assert [line[2] for line in lines] == found.labels[order].tolist()


def test_a_class_name_with_a_slash_names_a_results_file_not_a_folder(tmp_path):
    # A folder's class "car/truck" made comp3_det_test_car/truck.txt, a file in a folder.
    detections = {"img1": (np.array([[0.0, 1.0, 10.0, 11.0]]), np.array([0.5]), np.array([1]))}
    written = voc_results.write_voc_results(
        tmp_path, detections, ("person", "car/truck"), competition="comp3"
    )
    assert [path.name for path in written] == [
        "comp3_det_test_person.txt",
        "comp3_det_test_car_truck.txt",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert written[1].read_text() == "img1 0.500000 1.000 2.000 10.000 11.000\n"


def test_two_eval_images_of_one_name_are_refused_for_voc_results(tmp_path, monkeypatch):
    # Results lines name images by file name without extension: a/x.jpg and b/x.png clash.
    class Split:
        def __getitem__(self, index):
            return types.SimpleNamespace(filename=("a/x.jpg", "b/x.png")[index])

    monkeypatch.setattr(eval_lib.sources, "open_split", lambda data_config, which: Split())
    info = types.SimpleNamespace(class_names=("cat",), eval_split_name="test")
    nothing = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    with pytest.raises(ValueError, match="both named 'x'"):
        eval_lib._write_voc_results(
            tmp_path, {0: nothing, 1: nothing}, types.SimpleNamespace(data=None), info
        )
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_split_without_ground_truth_reports_its_detections_and_why_there_is_no_map(tmp_path):
    # As VOC2012 test in TFDS: images without objects. A table and a mAP of NaNs tell nothing.
    config, _, state, detections = _known_output_model(tmp_path)
    class_names = pipeline.get_dataset_info(config.data).class_names
    images = [
        VocImage(f"train{i}", SIZE, SIZE, [VocObject(class_names[0], (8, 8, 40, 40))])
        for i in range(4)
    ]
    images += [VocImage(f"test{i}", SIZE, SIZE, []) for i in range(3)]
    ids = [image.image_id for image in images]
    config.data.source, config.data.class_names = "voc_folder", class_names
    config.data.folder = write_voc_folder(
        str(tmp_path / "voc"), images, image_sets={"train": ids[:4], "test": ids[4:]}
    )
    workdir = tmp_path / "run"
    tiny.save_checkpoint(config, state, workdir)

    results = eval_lib.evaluate_checkpoint(config, workdir)

    report = eval_lib.report(results, config.data)
    assert f"step 0: {3 * len(detections)} detections on 3 test images" in report
    assert (
        "no ground truth (no objects, or only difficult ones), so no mAP" in report
        and "--voc_results" in report
    )
    # A folder of one's own may just lack its boxes: VOC 2012's TFDS split is no help there.
    assert "else annotate their objects in their .xml files" in report
    assert "voc/2012" not in report
    assert "nan" not in report.lower()
    saved = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert saved["mAP"] is None and saved["loss"] is None  # nothing to learn from either


def test_data_whose_classes_changed_since_training_is_refused_with_the_runs_classes(tmp_path):
    # Same count, other order (a folder that gained one class and lost another): evaluated,
    # every label id would score the model's classes against other ones.
    config, _, state, _ = _known_output_model(tmp_path)
    names = pipeline.get_dataset_info(config.data).class_names
    workdir = tmp_path / "run"
    tiny.save_checkpoint(config, state, workdir)
    trained = (names[1], names[0], *names[2:])
    (workdir / "classes.json").write_text(json.dumps(trained))
    with pytest.raises(ValueError) as error:
        eval_lib.evaluate_checkpoint(config, workdir)
    assert str(error.value).startswith(f"The data's classes {names} are not the ones the run in")
    assert (
        f'--config configs/run.py:{workdir} --config.data.class_names="{trained}" '
        "--config.data.on_bad_data=skip"
    ) in str(error.value)


def test_the_runs_class_names_in_that_message_paste_into_a_shell_whatever_they_hold(tmp_path):
    # Names read from .xml files may hold a quote, a $ or a backtick: inside "...", the shell
    # broke them.
    config, _, state, _ = _known_output_model(tmp_path)
    workdir = tmp_path / "run"
    tiny.save_checkpoint(config, state, workdir)
    trained = ("it's", "$HOME", "a`b")
    (workdir / "classes.json").write_text(json.dumps(trained))
    with pytest.raises(ValueError) as error:
        eval_lib.evaluate_checkpoint(config, workdir)
    flags = str(error.value).partition("name the run's classes: ")[2]
    words = shlex.split(flags.partition(" --config.data.on_bad_data")[0])
    assert words[:2] == ["--config", f"configs/run.py:{workdir}"]
    name, _, value = words[2].partition("=")
    assert name == "--config.data.class_names" and ast.literal_eval(value) == trained


def test_a_config_of_another_model_is_refused_before_the_dataset_is_prepared(tmp_path, monkeypatch):
    config, _, state, _ = _known_output_model(tmp_path)
    workdir = tmp_path / "run"
    tiny.save_checkpoint(config, state, workdir)
    other = config.copy_and_resolve_references()
    other.model.num_classes = 0  # a folder config's: the run's count comes from classes.json
    other.data.image_size = 2 * config.data.image_size

    def prepare(*args, **kwargs):
        raise AssertionError("the dataset was prepared first")

    monkeypatch.setattr(eval_lib.pipeline, "get_dataset_info", prepare)
    num_classes = config.model.num_classes
    (workdir / "classes.json").write_text(json.dumps([f"c{i}" for i in range(num_classes)]))
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"image_size: checkpoint"):
        eval_lib.evaluate_checkpoint(other, workdir)
    with pytest.raises(AssertionError, match="prepared first"):  # the same model: goes on
        eval_lib.evaluate_checkpoint(config, workdir)
