"""Shared pytest setup.

torchvision must be imported before TensorFlow: in one process, TF 2.21 followed by
torchvision 0.29 segfaults, while the other order works. Importing it here (when the
optional `port` extra is installed) fixes the order for every test module.

The tests that compare with torch and torchvision (the weight port, the PyTorch reference
loss, adaptive pooling) skip without the extra. CI installs it and sets
``YOLOJAX_REQUIRE_PORT=1``, which makes its absence an error instead of silent skips.

Dozens of tests train, evaluate and restore the same tiny models, and compiling their
steps took about a third of the suite's time: a persistent JAX compilation cache, fresh for
each pytest process (each xdist worker) and removed at its end, serves them and the
processes the tests start (set before JAX is imported, in the environment they inherit).
One a process, not one for the run: JAX writes an entry in place, and a worker reading
the other's half-written entry would warn and compile again.
"""

import logging
import os
import shutil
import signal
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A script's background job (`pytest ... &`) starts with Ctrl-C ignored, and the processes
# the tests start would inherit that: the Ctrl-C tests would see nothing arrive, and a run
# would be told of it. Each test that wants it ignored ignores it itself.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Assigned, not defaulted: an xdist worker inherits its controller's folder, and a cache
# of the user's would make the suite depend on what ran before.
_JAX_CACHE = os.path.join(tempfile.gettempdir(), f"yolojax-tests-jax-cache-{os.getpid()}")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

# Optional dependency (the `port` extra); see the module docstring for why it is here.
try:
    import torchvision  # noqa: F401
except ImportError as error:
    if os.environ.get("YOLOJAX_REQUIRE_PORT") == "1":
        raise pytest.UsageError(
            f"YOLOJAX_REQUIRE_PORT=1, but torchvision cannot be imported ({error}): install "
            'the `port` extra (pip install -e ".[test,port]").'
        ) from error


def pytest_sessionfinish(session):
    shutil.rmtree(_JAX_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_process_hooks(monkeypatch):
    """Puts back the unraisable hook and asyncio's log filters after each test. A failing
    command (yolojax.cli.command_errors) leaves its noise filters in place for its way out,
    and tests run commands in-process (predict.main)."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
