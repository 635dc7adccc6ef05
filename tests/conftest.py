"""Shared pytest setup.

torchvision must be imported before TensorFlow: in one process, TF 2.21 followed by
torchvision 0.29 segfaults, while the other order works. Importing it here (when the
optional `port` extra is installed) fixes the order for every test module.

The tests that compare with torch and torchvision (the weight port, the PyTorch reference
loss, adaptive pooling) skip without the extra. CI installs it and sets
``YOLOJAX_REQUIRE_PORT=1``, which makes its absence an error instead of silent skips.
"""

import logging
import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Optional dependency (the `port` extra); see the module docstring for why it is here.
try:
    import torchvision  # noqa: F401
except ImportError as error:
    if os.environ.get("YOLOJAX_REQUIRE_PORT") == "1":
        raise pytest.UsageError(
            f"YOLOJAX_REQUIRE_PORT=1, but torchvision cannot be imported ({error}): install "
            'the `port` extra (pip install -e ".[test,port]").'
        ) from error


@pytest.fixture(autouse=True)
def _restore_process_hooks(monkeypatch):
    """Puts back the unraisable hook and asyncio's log filters after each test. A failing
    command (yolojax.cli.command_errors) leaves its noise filters in place for its way out,
    and tests run commands in-process (predict.main)."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
