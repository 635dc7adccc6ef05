"""Shared pytest setup.

torchvision must be imported before TensorFlow: in one process, TF 2.21 followed by
torchvision 0.29 segfaults, while the other order works. Importing it here (when the
optional `port` extra is installed) fixes the order for every test module.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # Optional dependency (the `port` extra); see the module docstring for why it is here.
    import torchvision  # noqa: F401
except ImportError:
    pass
