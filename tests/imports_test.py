"""What importing yolojax pulls in: the models, configs and train step need no TensorFlow.

A GPU machine may have JAX and PyTorch but no TensorFlow (the benchmark images do), and
`benchmarks/train_step.py` must still run there; `yolojax.data` imports TensorFlow only
with its pipeline.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

_CHECK = """
import sys
from pathlib import Path
import configs.voc, configs.shapes
import yolojax, yolojax.data, yolojax.train_lib
import benchmarks.train_step
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


_NAMED = """
import sys
from pathlib import Path
import yolojax
loaded = lambda: ("yolojax.train_lib" in sys.modules, "tensorflow" in sys.modules)
print("after import:", loaded())
restore = yolojax.train_lib.restore_trained_state  # as the README and messages name it
print("after naming:", loaded(), restore.__module__)
print("listed:", {"Detector", "train_lib", "config"} <= set(dir(yolojax)))
try:
    yolojax.no_such_module
except AttributeError as error:
    print("unknown:", error)
"""


def test_the_modules_the_docs_name_load_when_first_named():
    # `import yolojax` then `yolojax.train_lib....` (the README, error messages) raised
    # AttributeError unless something had imported the module first.
    result = subprocess.run(
        [sys.executable, "-c", _NAMED], capture_output=True, text=True, timeout=300, check=True
    )
    assert "after import: (False, False)" in result.stdout, result.stdout
    assert "after naming: (True, False) yolojax.train_lib" in result.stdout, result.stdout
    assert "listed: True" in result.stdout, result.stdout
    assert "unknown: module 'yolojax' has no attribute 'no_such_module'" in result.stdout


def test_the_names_type_checkers_read_are_the_ones_that_load():
    # Editors and type checkers read the TYPE_CHECKING imports; __getattr__ loads _EXPORTS.
    import yolojax

    tree = ast.parse(Path(yolojax.__file__).read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    declared = {
        alias.name: node.module.removeprefix("yolojax.")
        for node in block.body
        for alias in node.names
    }
    assert declared == yolojax._EXPORTS
    assert sorted(yolojax.__all__) == sorted(set(declared) - {"Detector"})


_TENSORFLOW_NOTICES = ("before absl::InitializeLog() is called", "] oneDNN custom operations")


@pytest.mark.parametrize(
    "first_use",
    [
        "from yolojax.data import make_train_iterator",
        "from yolojax.data.voc_offline import prepare_voc_offline",
        "from yolojax import Detector; Detector",
    ],
)
def test_a_script_using_the_python_api_starts_without_tensorflows_notices(first_use):
    # As the commands do: four lines of TensorFlow's native start-up logging (absl's warning
    # and the oneDNN line, twice each) began every script that read data or made a Detector.
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", f"{first_use}\nimport tensorflow\nprint('imported')"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=environment,
    )
    assert result.stdout == "imported\n"
    assert not any(notice in result.stderr for notice in _TENSORFLOW_NOTICES), result.stderr


def _top_level_imports(path: Path) -> list[str]:
    modules = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
    return modules


def test_every_module_that_imports_tensorflow_imports_it_quietly_first():
    # Whichever module a script imports first, TensorFlow comes in through quiet_tensorflow.
    import yolojax

    package = Path(yolojax.__file__).parent
    checked, late = [], []
    for path in sorted(package.rglob("*.py")):
        imports = _top_level_imports(path)
        positions = [
            position
            for position, module in enumerate(imports)
            if module.split(".")[0] in ("tensorflow", "tensorflow_datasets")
        ]
        if path.name == "quiet_tensorflow.py" or not positions:
            continue
        checked.append(path.relative_to(package).as_posix())
        quiet = "yolojax.data.quiet_tensorflow"
        if quiet not in imports or imports.index(quiet) > positions[0]:
            late.append(checked[-1])
    assert {"data/pipeline.py", "data/sources.py", "data/voc_offline.py"} <= set(checked)
    assert late == []
