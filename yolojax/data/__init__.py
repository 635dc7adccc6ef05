"""Input pipelines: TFDS PASCAL VOC, the embedded synthetic_shapes set and VOC-format folders.

Importing this package hides GPUs from TensorFlow (tf.data runs on the host CPU; the
accelerators belong to JAX) and registers the `synthetic_shapes` and `voc_folder` builders.
"""

import logging

import tensorflow as tf

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF already initialized its devices (someone used it first).
    logging.getLogger(__name__).warning(
        "TensorFlow was initialized before yolojax.data: it may hold GPU memory"
    )

from yolojax.data.config import default_data_config
from yolojax.data.pipeline import (
    DatasetInfo,
    get_dataset_info,
    make_eval_iterator,
    make_train_iterator,
)

__all__ = [
    "DatasetInfo",
    "default_data_config",
    "get_dataset_info",
    "make_eval_iterator",
    "make_train_iterator",
]
