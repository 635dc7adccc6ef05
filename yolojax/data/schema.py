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
