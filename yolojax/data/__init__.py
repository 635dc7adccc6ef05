"""Input pipelines: TFDS PASCAL VOC, the embedded synthetic_shapes set and VOC-format folders.

TensorFlow is imported only with the pipeline (`yolojax.data.pipeline`, or the first use of one
of its names below) and the other modules that read data, through `quiet_tensorflow`: without
its start-up notices, and with the GPUs hidden from it (tf.data runs on the host CPU and the
accelerators belong to JAX). `default_data_config`, which every config reads, needs no
TensorFlow, so models, configs and the train step also run where it is not installed.
"""

import importlib

from yolojax.data.config import default_data_config

_PIPELINE_NAMES = (
    "DatasetInfo",
    "EvalBatches",
    "get_dataset_info",
    "make_eval_iterator",
    "make_train_iterator",
)

__all__ = ["default_data_config", *_PIPELINE_NAMES]


def __getattr__(name: str):
    if name in _PIPELINE_NAMES:
        return getattr(importlib.import_module("yolojax.data.pipeline"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
