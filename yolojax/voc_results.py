"""Detections as PASCAL VOC devkit results files, for the VOC evaluation server.

VOC2012 test's annotations are not public: its mAP (the paper's Table 3) comes from the
evaluation server, which takes the devkit's results files, one per class, named
``<competition>_det_<test set>_<class>.txt``, each line a detection::

    <image id> <confidence> <xmin> <ymin> <xmax> <ymax>

with the image id the image file's name without extension (``2008_000001``) and the box in
the devkit's pixel coordinates: pixel indices from 1, inclusive. yolojax's boxes are
continuous (pixel column i spans [i - 1, i]; ``data.pipeline.continuous_boxes``), so each
detection's xmin and ymin are written one more: the devkit's IoU of those, with its +1
pixel widths, is the IoU yolojax's evaluator reports. ``comp4`` is the competition for
methods trained on data beyond VOC (ImageNet-pretrained backbones); ``comp3`` is for VOC
data alone. The server wants the files under ``results/VOC2012/Main/`` in a tar archive:
``evaluate.py --voc_results DIR`` writes them into ``DIR`` as they are, and docs/data.md
shows the archive command.
"""

import os
from pathlib import Path

import numpy as np

from yolojax.atomic_files import atomic_write_files


def image_id(filename: str, index: int) -> str:
    """The devkit's id of an image: its file name without extension (``000001.jpg`` →
    ``000001``), or the example's index in the split, zero-padded, for data without
    file names."""
    stem = Path(filename).stem
    return stem if stem else f"{index:06d}"


def results_file_name(competition: str, test_set: str, class_name: str) -> str:
    """The devkit's results file name: ``comp4_det_test_aeroplane.txt``; a class name's
    path separators become ``_`` (a folder's class ``car/truck``: ``..._car_truck.txt``, not
    a file in a folder ``..._car``)."""
    safe_name = class_name.replace("/", "_").replace(os.sep, "_")
    return f"{competition}_det_{test_set}_{safe_name}.txt"


def competition(model_config) -> str:
    """The VOC competition a run's results enter: ``comp4`` for a model that starts from
    other weights (``config.model.pretrained``: ported ImageNet weights, data beyond VOC; or
    another run's, taken as such too), ``comp3`` for one trained from scratch on VOC alone
    (``configs/voc.py:darknet``)."""
    return "comp4" if model_config.pretrained else "comp3"


def write_voc_results(
    folder,
    detections: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    class_names,
    *,
    competition: str,
    test_set: str = "test",
) -> list[Path]:
    """Writes one devkit results file per class into ``folder`` (made if needed), all of
    them or none (:func:`yolojax.atomic_files.atomic_write_files`).

    Args:
      folder: the output folder.
      detections: ``{image id: (boxes, scores, labels)}``, boxes ``(K, 4)`` pixel
        ``[xmin, ymin, xmax, ymax]`` in continuous coordinates (as ``pixel_detections``
        gives them), scores ``(K,)``, labels ``(K,)`` class ids; images without detections
        may be left out.
      class_names: the class of each id, which names its file.
      competition: 'comp4' (trained with outside data, such as ImageNet weights) or
        'comp3' (VOC data only): :func:`competition` of the run's ``config.model``.
      test_set: the image set's name in the file names ('test').

    Returns:
      The files written, in class order (a class without detections gets an empty file:
      the server expects all of them).
    """
    lines = {label: [] for label in range(len(class_names))}
    for name, (boxes, scores, labels) in detections.items():
        for box, score, label in zip(np.asarray(boxes), scores, labels, strict=True):
            xmin, ymin, xmax, ymax = (float(value) for value in box)
            xmin, ymin = xmin + 1, ymin + 1  # the devkit's pixels: from 1, ends inclusive
            lines[int(label)].append(
                f"{name} {float(score):.6f} {xmin:.3f} {ymin:.3f} {xmax:.3f} {ymax:.3f}\n"
            )
    folder = Path(folder)
    files = {
        folder / results_file_name(competition, test_set, name): "".join(lines[label]).encode()
        for label, name in enumerate(class_names)
    }
    # All or none: a full disk midway left some classes' files of this evaluation beside the
    # others' of an earlier one, a set the server would score as one.
    atomic_write_files(files)
    return list(files)
