"""TensorFlow as the input pipelines use it, imported here before any module of
``yolojax.data`` imports it (each imports this first, so whichever a script imports first):

* without the start-up notices its native libraries print on stderr (absl's warning and the
  oneDNN line, each twice; :func:`yolojax.cli.import_tensorflow`), which the commands drop
  too, so that a script using the Python API starts as quietly as they do;
* with the GPUs hidden from it: tf.data runs on the host CPU, and the accelerators belong to
  JAX.
"""

import logging

from yolojax import cli

cli.import_tensorflow()
import tensorflow as tf  # noqa: E402 (after the quiet import above, which this one reuses)

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF already initialized its devices (someone used it first).
    logging.getLogger(__name__).warning(
        "TensorFlow was initialized before yolojax.data: it may hold GPU memory"
    )
