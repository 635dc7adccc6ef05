"""Shared helpers for the benchmarks: command-line parsing, machine description, alternating
timing, peak FLOP/s, Markdown tables."""

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from importlib import metadata

import jax

from configs import shapes, voc

# Dense peak FLOP/s of accelerators by the device kind JAX reports (substring match) and
# compute dtype. float32 counts TF32 tensor cores: both JAX (default matmul precision) and
# the PyTorch reference (`set_float32_matmul_precision('high')`) use them for float32.
# The first name the device kind contains wins, so the PCIe and NVL parts come before the
# SXM ones ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA GH200 480GB").
PEAK_FLOPS = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "H100 NVL": {"bfloat16": 835e12, "float32": 417.5e12},
    "H200 NVL": {"bfloat16": 835e12, "float32": 417.5e12},
    "H100": {"bfloat16": 989e12, "float32": 494.7e12},  # SXM, dense
    "H200": {"bfloat16": 989e12, "float32": 494.7e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def user_config(backbone: str):
    """The run config a user trains ``backbone`` with: configs/voc.py's variant of that
    name, or configs/shapes.py for darknet_tiny (the one config that trains it)."""
    return shapes.get_config() if backbone == "darknet_tiny" else voc.get_config(backbone)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """The device's dense peak FLOP/s for `dtype`, or None when unknown (e.g. a CPU)."""
    for name, peaks in PEAK_FLOPS.items():
        if name in device_kind:
            return peaks[dtype]
    return None


def xla_flops(stage) -> float:
    """FLOPs by XLA's cost analysis of a ``jax.stages.Lowered`` or ``Compiled``; NaN when
    the backend gives none (``Lowered.cost_analysis()`` is None through a PJRT plugin, as
    on CUDA: lower for the CPU to count, see :func:`abstract_on`)."""
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return (cost or {}).get("flops", float("nan"))


def model_flops(lower_for_cpu, compiled_flops) -> float:
    """The model's FLOPs: XLA's cost analysis of ``lower_for_cpu(cpu)``, the computation
    lowered (not compiled) for the CPU device ``cpu`` with XLA's own convolutions, whatever
    kernels a backend picks later (a matrix-product convolution on a small padded map also
    counts the products with the padding's zeros). For the CPU because through a PJRT
    plugin, as on CUDA, JAX gives no cost analysis of a lowered computation. Nothing is
    compiled or allocated. Without a CPU backend (JAX_PLATFORMS=cuda): ``compiled_flops()``.
    """
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:
        return compiled_flops()
    return xla_flops(lower_for_cpu(cpu))


def abstract_on(tree, sharding):
    """``tree``'s arrays as ``jax.ShapeDtypeStruct`` placed by ``sharding``: arguments to
    lower a function for other devices (the CPU, for :func:`xla_flops`) without copying."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(packages: Sequence[str]) -> str:
    """'python 3.11.7, jax 0.10.2, ...' for the installed `packages`."""
    found = [f"python {platform.python_version()}"]
    for package in packages:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with each flag's default, but for a flag without one (None): its
    help says what happens then ("(default 112)", where that depends on another flag),
    and "(default: None)" after it would say something else."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def argument_parser(module_doc: str, module: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its usage line with the command that runs it (``python -m
    <module>``; as a file its imports of the repository fail), its docstring's first
    paragraph as the description, and each flag's default in its help."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=" ".join(module_doc.split("\n\n")[0].split()),
        formatter_class=_DefaultsHelpFormatter,
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a count, a size, a batch)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer of at least 0 (untimed warm-up steps, say)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def busy_machine_warning() -> str | None:
    """A warning line when other work keeps the cores busy (a 1-minute load average of half
    a core or more per core this process may use), else None. CPU figures measured then
    say more about the other work than about the code, ratios included: under contention
    PyTorch's CPU threads slow down far more than XLA's."""
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    if load < 0.5 * cores:
        return None
    return (
        f"Warning: the load average is {load:.2f} on {cores} cores before the run. If other "
        "work shares the CPU, the figures (ratios too) will say more about that work than "
        "about the code: measure on an idle machine (the load of a run that just ended "
        "fades within a minute or two)."
    )


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as `uptime` prints them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def time_alternating(
    steps: dict[str, Callable[[], None]],
    *,
    rounds: int,
    steps_per_round: int,
    untimed_per_round: int = 0,
) -> dict[str, list[float]]:
    """Wall time of each step function, timed in turns so noise hits all of them alike.

    Each round runs, for every function in turn, `untimed_per_round` calls that are not
    timed (the first calls after another function ran can pay for its memory use) and then
    `steps_per_round` timed calls; each call must wait for its own result (e.g.
    `block_until_ready`).

    Returns:
      name → seconds of every timed call.
    """
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(untimed_per_round):
                step()
            for _ in range(steps_per_round):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """The median (float('nan') for no values)."""
    return statistics.median(values) if values else float("nan")


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of `rows` (dicts of already formatted strings).

    Args:
      rows: one dict per row.
      columns: (key, header) pairs, in order; a missing key prints as an empty cell.
    """
    lines = ["| " + " | ".join(header for _, header in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for key, _ in columns) + " |")
    return "\n".join(lines)


def matmul_flops_per_second(device, dtype: str, size: int = 2048, calls: int = 5) -> float:
    """Achieved FLOP/s of one large square matmul: the practical compute ceiling of a device
    without a datasheet peak (a CPU), against which the train step's FLOP/s is compared."""
    a = jax.device_put(jax.random.normal(jax.random.key(0), (size, size), dtype), device)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    times = time_alternating(
        {"matmul": lambda: jax.block_until_ready(matmul(a))}, rounds=1, steps_per_round=calls
    )
    return 2 * size**3 / median(times["matmul"])
