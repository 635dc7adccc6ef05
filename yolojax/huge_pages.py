"""Huge pages for malloc on XLA:CPU: the command-line tools restart themselves with them.

XLA:CPU allocates a compiled step's temporaries afresh at every execution, as one block
(1.2 GiB for the ResNet-50 train step at 224, batch 8). glibc serves a block that large with
``mmap`` and unmaps it on free, so every step faults in and zeroes 4 KiB pages again, and the
step's large strided passes (im2col, transposes, BatchNorm) miss the TLB. With
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` glibc asks the kernel for transparent huge pages on
what it maps, and that step runs about 20% faster: 2.1 s against 2.6-2.8 s (BENCHMARKS.md,
"Train step", item 7).

glibc reads its tunables once, when the process starts, so a running Python cannot turn
this on. :func:`restart_with_huge_pages` re-executes the command (the same interpreter,
arguments and process id) with the tunable added to ``GLIBC_TUNABLES``; ``train.py``,
``evaluate.py`` and ``python -m yolojax.predict`` call it first thing, before they import
JAX (:func:`yolojax.cli.launch`), and ``benchmarks/train_step.py`` before its work. It
leaves the process alone where the setting would change nothing or is not wanted:

* ``YOLOJAX_HUGE_PAGES=0`` (the opt-out);
* ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb`` (yours wins, whatever its value);
* not glibc ≥ 2.35 (the first with the tunable), e.g. macOS or musl;
* transparent huge pages not in ``madvise`` mode: with ``always`` the kernel backs large
  allocations with huge pages already, with ``never`` it gives none;
* JAX will not run on the CPU: ``JAX_PLATFORMS`` names another platform first, or, without
  it, a JAX accelerator plugin (CUDA, ROCm, TPU) is installed, so host memory holds no
  step's temporaries.
"""

import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping

OPT_OUT_ENV = "YOLOJAX_HUGE_PAGES"
TUNABLE = "glibc.malloc.hugetlb=1"
_MIN_GLIBC = (2, 35)
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def environment_with_huge_pages(
    environ: Mapping[str, str],
    *,
    glibc_version: tuple[int, int] | None,
    thp_mode: str | None,
    xla_on_cpu: bool,
) -> dict[str, str] | None:
    """The environment to restart the process with, or None to leave it as it is.

    Args:
      environ: the process's environment variables.
      glibc_version: (major, minor) of the C library, None when it is not glibc.
      thp_mode: the kernel's transparent huge page mode ('always', 'madvise', 'never'),
        None where there is none.
      xla_on_cpu: whether JAX will compute on the CPU.

    Returns:
      A copy of `environ` with `TUNABLE` added to ``GLIBC_TUNABLES`` (colon-separated, after
      any tunables already there), or None in the cases the module docstring lists.
    """
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (
        environ.get(OPT_OUT_ENV, "1") == "0"
        or "glibc.malloc.hugetlb" in tunables
        or glibc_version is None
        or glibc_version < _MIN_GLIBC
        or thp_mode != "madvise"
        or not xla_on_cpu
    ):
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def restart_with_huge_pages() -> None:
    """Re-executes this command with huge pages for malloc, unless it should not (see above).

    Returns only when it leaves the process alone (with a warning if the restart itself
    failed); otherwise the process continues as the same command from its start, with
    output written so far flushed. Call it first in a command's entry point, never in a
    library function or a test process.
    """
    if not sys.executable or not sys.orig_argv:
        return
    environ = environment_with_huge_pages(
        os.environ,
        glibc_version=glibc_version(),
        thp_mode=_thp_mode(),
        xla_on_cpu=_xla_on_cpu(os.environ),
    )
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # orig_argv keeps the interpreter's options and '-m module' as given; argv would not
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    except OSError as error:  # e.g. an interpreter path that no longer exists: go on without
        logging.getLogger(__name__).warning(
            "Could not restart with huge pages for malloc (%s); continuing with glibc's "
            "default malloc (slower on XLA:CPU). Set %s=0 to skip the restart.",
            error,
            OPT_OUT_ENV,
        )


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None (musl, macOS, ...)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # e.g. 'glibc 2.36'
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):  # no confstr, no glibc, odd string
        return None


def _thp_mode() -> str | None:
    try:
        with open(_THP_MODE_FILE) as modes:  # e.g. 'always [madvise] never'
            text = modes.read()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text and "]" in text else None


def _xla_on_cpu(environ: Mapping[str, str]) -> bool:
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    # Without JAX_PLATFORMS, JAX prefers an installed accelerator plugin to the CPU.
    return not (
        importlib.metadata.entry_points(group="jax_plugins")
        or importlib.util.find_spec("jax_plugins") is not None
        or importlib.util.find_spec("libtpu") is not None
    )
