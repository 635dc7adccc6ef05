"""What importing yolojax pulls in: the models, configs and train step need no TensorFlow.

A GPU machine may have JAX and PyTorch but no TensorFlow (the benchmark images do), and
`benchmarks/train_step.py` must still run there; `yolojax.data` imports TensorFlow only
with its pipeline.
"""

import subprocess
import sys

_CHECK = """
import sys
import configs.voc, configs.shapes
import yolojax, yolojax.data, yolojax.train_lib
from yolojax.data import default_data_config
default_data_config()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
print("loaded:", loaded)
from yolojax.data import make_train_iterator  # the pipeline: now TensorFlow is imported
print("after pipeline:", "tensorflow" in sys.modules)
from yolojax import Detector
import yolojax.detector
print("Detector:", Detector is yolojax.detector.Detector)
"""


def test_configs_models_and_train_step_import_without_tensorflow_and_pipeline_imports_it():
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=300, check=True
    )
    assert "loaded: []" in result.stdout, result.stdout
    assert "after pipeline: True" in result.stdout, result.stdout
    assert "Detector: True" in result.stdout, result.stdout  # yolojax.Detector, on first use
