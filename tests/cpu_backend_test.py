"""Importing yolojax moves XLA:CPU's convolutions off YNNPACK, unless told otherwise."""

import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata

import jax
import jax.numpy as jnp
from jax import lax

from yolojax import cpu_backend

# Prints XLA_FLAGS after the imports and whether a compiled 3x3 convolution runs in YNNPACK
# (a fusion of kind __ynn_fusion; plain "ynn" can also match file names in the metadata).
_PROBE = textwrap.dedent(
    """
    import os, sys
    import jax, jax.numpy as jnp
    from jax import lax
    if sys.argv[1] == "jax-first":
        jnp.ones(1)  # starts the CPU backend before yolojax is imported
    import yolojax
    x, w = jnp.ones((2, 28, 28, 64)), jnp.ones((3, 3, 64, 64))
    conv = jax.jit(lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    print(os.environ.get("XLA_FLAGS", ""))
    print("__ynn_fusion" in conv.lower(x, w).compile().as_text())
    """
)


def _probe(order: str, xla_flags: str | None = None) -> tuple[str, bool, str]:
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, order],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    flags, in_ynn = result.stdout.splitlines()[-2:]
    return flags, in_ynn == "True", result.stderr


def test_import_puts_convolutions_on_xla_kernels():
    flags, in_ynn, _ = _probe("yolojax-first")
    assert cpu_backend.XLA_CONVOLUTIONS_FLAG in flags.split()
    assert not in_ynn


def test_users_own_ynn_setting_wins():
    own = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution,individual_dot"
    flags, in_ynn, _ = _probe("yolojax-first", own)
    assert flags == own
    assert in_ynn  # and it is what makes the difference


def test_too_late_import_warns_and_leaves_flags_alone():
    flags, in_ynn, stderr = _probe("jax-first")
    assert flags == ""
    assert in_ynn
    assert "Import yolojax before the first use of JAX" in stderr


def test_unmeasured_jaxlib_gets_no_flag(monkeypatch):
    # XLA stops at start on a flag it does not know, so a jaxlib release the flag was not
    # checked on is left alone.
    monkeypatch.setattr(metadata, "version", lambda name: "0.99.0")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert not cpu_backend.configure()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"


def _operand_types(hlo_text: str, op: str) -> set[str]:
    """The element types of the operands of every ``op`` instruction (convolution, dot) in a
    compiled module's HLO text (instruction names are unique in a module)."""
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo_text))
    operands = re.findall(rf" {op}\(%([\w.\-]+), %([\w.\-]+)\)", hlo_text)
    assert operands, f"no {op} in the compiled module"
    return {types[name] for pair in operands for name in pair}


def test_xla_cpu_computes_bfloat16_convolutions_in_float32():
    # A jaxlib that convolves in bfloat16 fails this: then BENCHMARKS.md's bfloat16 figures,
    # and bfloat16_notice's account, are stale.
    images, kernel = jnp.ones((2, 14, 14, 32), jnp.bfloat16), jnp.ones((3, 3, 32, 32), jnp.bfloat16)
    conv = jax.jit(
        lambda x, w: lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )
    hlo = conv.lower(images, kernel).compile().as_text()
    assert _operand_types(hlo, "convolution") == {"f32"}


def test_bfloat16_is_discouraged_where_xla_cpu_multiplies_it_in_float32():
    # Matrix products: float32 operands on jaxlib 0.10, where bfloat16 trained slower than
    # float32; bfloat16 ones on 0.12, where it trained faster. The notice must follow what
    # the installed jaxlib compiles (each CI leg has one of the two).
    a, b = jnp.ones((64, 128), jnp.bfloat16), jnp.ones((128, 32), jnp.bfloat16)
    hlo = jax.jit(jnp.matmul).lower(a, b).compile().as_text()
    products_in_float32 = _operand_types(hlo, "dot") == {"f32"}
    notice = cpu_backend.bfloat16_notice("bfloat16")
    assert (notice is not None) == products_in_float32
    if notice:
        assert "use --config.model.dtype=float32" in notice
    assert cpu_backend.bfloat16_notice("float32") is None
