"""XLA:CPU setting applied on `import yolojax`: convolutions on XLA's own kernels, not YNNPACK.

jaxlib's CPU backend (0.10 to 0.12 at least) hands every convolution to YNNPACK. For a
training step's convolutions (forward and both gradients) XLA's own convolution is faster on
this project's models: a ResNet-50 3×3 layer on a 56×56 map, batch 8, takes 37 ms instead of
59-72 ms, and the ResNet-50 YOLO train step at 224 gets 13% faster on jaxlib 0.10 and 1.7-1.9×
faster on 0.11 and 0.12 (BENCHMARKS.md, "Train step"). YNNPACK keeps the matrix products,
where it is fast.

`configure` adds `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` to
``XLA_FLAGS``. XLA reads that variable once, when JAX first starts a backend, so the setting
holds when yolojax is imported before JAX is first used (devices, arrays, jit), as in
`train.py`, `evaluate.py` and the benchmarks. It changes nothing on GPUs and TPUs. It is
left out when ``XLA_FLAGS`` already sets `xla_cpu_experimental_ynn_fusion_type` (yours
wins), and for jaxlib versions other than the ones it was measured on, because XLA stops
the process at start on a flag it does not know.

`bfloat16_notice` is what a run computing in bfloat16 on the CPU is told where XLA:CPU
computes bfloat16 in float32 (jaxlib 0.10), so that float32 is faster.
"""

import importlib.metadata
import logging
import os
import sys

XLA_CONVOLUTIONS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# jaxlib releases whose XLA has the flag and was measured with it (major.minor).
_MEASURED_JAXLIB = ("0.10", "0.11", "0.12")
# jaxlib releases whose XLA:CPU converts the operands of bfloat16 matrix products to float32,
# as it does those of convolutions (0.10 and 0.12); 0.12 gives products bfloat16 operands.
_FLOAT32_PRODUCTS_JAXLIB = ("0.10",)


def configure() -> bool:
    """Adds `XLA_CONVOLUTIONS_FLAG` to ``$XLA_FLAGS`` unless told otherwise (see above).

    Returns:
      Whether the flag is in ``XLA_FLAGS`` in time: False where it was left out, and with a
      warning when JAX's CPU backend had already started (too late for flags).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_CONVOLUTIONS_FLAG in flags.split():
        return True
    if "xla_cpu_experimental_ynn_fusion_type" in flags or _jaxlib_release() not in _MEASURED_JAXLIB:
        return False
    if _cpu_backend_started():
        logging.getLogger(__name__).warning(
            "JAX's CPU backend started before yolojax was imported, so its convolutions stay "
            "on YNNPACK (slower CPU training; see yolojax/cpu_backend.py). Import yolojax "
            "before the first use of JAX to get XLA's own convolutions."
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CONVOLUTIONS_FLAG}".strip()
    return True


def _jaxlib_release() -> str | None:
    """The installed jaxlib's major.minor ('0.10'), or None without jaxlib."""
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None
    return ".".join(jaxlib.split(".")[:2])


def _cpu_backend_started() -> bool:
    if "jax" not in sys.modules:  # not imported: no backend started (and none imported here)
        return False
    try:  # jax's internal registry of started backends (present in the measured jax)
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        return False
    return started and sys.modules["jax"].default_backend() == "cpu"


def bfloat16_notice(dtype: str) -> str | None:
    """What a run that computes in ``dtype`` on JAX's CPU backend is told, or None.

    XLA:CPU (jaxlib 0.10 and 0.12) has no bfloat16 convolution: it converts the operands to
    float32, convolves in float32 and converts the result back. jaxlib 0.10 does the same
    for matrix products, and there a bfloat16 model trains slower than a float32 one
    (0.56-0.98× at 224 px for Darknet and ResNet-50 on two hosts: BENCHMARKS.md, "bfloat16
    on a CPU"), with bfloat16's rounding and nothing gained. jaxlib 0.12 multiplies matrices
    in bfloat16, and there bfloat16 trained 1.03-1.48× faster than float32 on a CPU with
    AVX-512 BF16, so nothing is said; nor for releases not measured.
    """
    import jax  # here, not above: `import yolojax` leaves JAX unimported (see `configure`)

    if dtype != "bfloat16" or jax.default_backend() != "cpu":
        return None
    if _jaxlib_release() not in _FLOAT32_PRODUCTS_JAXLIB:
        return None
    return (
        "config.model.dtype='bfloat16' on the CPU: this jaxlib's XLA:CPU computes bfloat16 "
        "convolutions and matrix products in float32 (converting to and from bfloat16 around "
        "each), so training runs slower than in float32 here (0.56-0.98× its speed in "
        "BENCHMARKS.md), with bfloat16's rounding. "
        "On a CPU use --config.model.dtype=float32, or jaxlib >= 0.12 (Python >= 3.12), "
        "where bfloat16 trained faster on a CPU with AVX-512 BF16."
    )
