"""Shared pytest setup.

torchvision must be imported before TensorFlow: in one process, TF 2.21 followed by
torchvision 0.29 segfaults, while the other order works. Importing it here (when the
optional `port` extra is installed) fixes the order for every test module.
"""

import contextlib
import logging
import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Optional dependency (the `port` extra); see the module docstring for why it is here.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401


@pytest.fixture(autouse=True)
def _restore_process_hooks(monkeypatch):
    """Puts back the unraisable hook and asyncio's log filters after each test. A failing
    command (yolojax.cli.command_errors) leaves its noise filters in place for its way out,
    and tests run commands in-process (predict.main)."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
