"""Gives glibc back the malloc thresholds that TensorFlow's `from_generator` pins.

The first `tf.data.Dataset.from_generator` iterator in a process makes TensorFlow call
``mallopt(M_MMAP_THRESHOLD, 128 KiB)`` (its ``ApplyPython311MemoryPatch``: in TF 2.21 once
per process, whatever the Python version). Setting a threshold turns off glibc's adaptive one,
which would otherwise rise to the largest block freed (up to 32 MiB) and keep such blocks in
malloc's heap. Pinned at 128 KiB, every larger block is ``mmap``-ed and unmapped again on
free, and XLA:CPU allocates its convolution packing buffers and kernel scratch (hundreds of
KiB to a few MiB) afresh at every op: the kernel then faults in and zeroes their pages on
every train step. In `train.py --config configs/shapes.py` (darknet_tiny, 112 px, batch
16) that was some 6,000-8,000 page faults a step, against about 100 for the same step
without the pipeline (BENCHMARKS.md, "Train step", item 8).

:func:`restore` sets the thresholds to where glibc's adaptive policy ends up for such a
process; `yolojax.data.pipeline` calls it each time it has made an iterator, since that is
when TensorFlow may have pinned them. Memory stays close: the whole first run's peak
resident size was 1.41 against 1.33 GB.
"""

import ctypes

from yolojax import huge_pages

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's ceiling for its adaptive mmap threshold on 64-bit systems
# (DEFAULT_MMAP_THRESHOLD_MAX) and, as glibc sets it alongside, twice that for trimming.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


def restore() -> None:
    """Sets glibc's mmap threshold to `MMAP_THRESHOLD` and its trim threshold to
    `TRIM_THRESHOLD` (see the module docstring); does nothing where the C library is not
    glibc."""
    if huge_pages.glibc_version() is None:
        return
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
