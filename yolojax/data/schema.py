"""The TFDS features each of yolojax's own builders (`synthetic_shapes`, `voc_folder`) stores
for an example: TFDS `voc`'s, without `pose`, so that `sources.SplitSource` reads all three
sources alike."""

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import numpy as np
import tensorflow_datasets as tfds


def detection_features(
    class_names: tuple[str, ...], image: tfds.features.Image | None = None
) -> tfds.features.FeaturesDict:
    """``image`` (default: any size, as stored), ``image/filename`` and ``objects``: each
    object's ``label`` (an index into ``class_names``), ``bbox`` (normalized yxyx, VOC's
    pixel coordinates divided by the image size), ``is_difficult`` and ``is_truncated``."""
    return tfds.features.FeaturesDict(
        {
            "image": image or tfds.features.Image(),
            "image/filename": tfds.features.Text(),
            "objects": tfds.features.Sequence(
                {
                    "label": tfds.features.ClassLabel(names=class_names),
                    "bbox": tfds.features.BBoxFeature(),
                    "is_difficult": np.bool_,
                    "is_truncated": np.bool_,
                }
            ),
        }
    )


def local_dataset_info(info: tfds.core.DatasetInfo) -> tfds.core.DatasetInfo:
    """``info`` (a builder's ``_info()``), without TFDS's look-up of precomputed info in its
    GCS bucket: yolojax's builders are prepared on this machine, never published there. Each
    builder made before its dataset was prepared (two a preparation) ran that look-up, which
    makes an empty ``tmp*tfds`` folder in the system's temporary folder and leaves it there
    (with GCS access off, TFDS's default, it then reads nothing)."""
    info.initialize_from_bucket = _no_bucket
    return info


def _no_bucket() -> None:
    """What ``DatasetInfo.initialize_from_bucket`` finds for yolojax's builders: nothing."""
