"""Where a compiled step's GPU time goes: a JAX profiler trace, summed by kind of kernel.

    python -m benchmarks.train_step --profile /tmp/trace ...   # traces the JAX step on a GPU
    python -m benchmarks.kernel_profile /tmp/trace/resnet152 --steps 3 --gflop 18157

The trace's kernels (each stream of each `/device:GPU:N` plane) are sorted by their name and
XLA op into convolutions (cuDNN), matrix products, XLA's reduction and elementwise fusions
(BatchNorm statistics, activations, the loss, the optimizer), transposes and copies, and
collectives. The table gives each kind's time per step and share of the busy time, the busy
time against the measured wall time (the rest is the GPU waiting: launch gaps, the host), and,
given the step's FLOPs, the rate the convolutions alone reach: the MFU that making everything
else free would leave.
"""

import argparse
import collections
import dataclasses
import gzip
import json
import pathlib
import re
import time
from collections.abc import Callable

import jax

# First match wins: a cuDNN kernel's name can also contain "gemm" (implicit GEMM). Not "conv"
# alone: XLA names its dtype-cast fusions "loop_convert_fusion".
KINDS = (
    ("convolution", re.compile(r"conv(?!ert)|fprop|dgrad|wgrad|implicit_gemm|cudnn", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cublas|cutlass|\bdot", re.I)),
    ("collective", re.compile(r"nccl|all-?reduce|all-?gather", re.I)),
    ("transpose/copy", re.compile(r"transpose|memcpy|memset|copy", re.I)),
    ("reduction fusion", re.compile(r"reduce", re.I)),
)
OTHER_KIND = "elementwise/other"


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One kernel run on the GPU: `name` (the kernel's), `op` (the XLA op it runs, or "")."""

    name: str
    op: str
    start_ns: float
    duration_ns: float


def kind_of(kernel: Kernel) -> str:
    """The kind (`KINDS`' names, or `OTHER_KIND`) of a kernel, by its name and XLA op."""
    text = f"{kernel.name} {kernel.op}"
    return next((kind for kind, pattern in KINDS if pattern.search(text)), OTHER_KIND)


def trace(run: Callable[[], None], steps: int, directory: str) -> tuple[str, float]:
    """Runs `run` (one step, waiting for its result) `steps` times under `jax.profiler.trace`
    into `directory`; returns the trace file (`*.xplane.pb`) and the steps' wall time in ms."""
    with jax.profiler.trace(directory):
        start = time.perf_counter()
        for _ in range(steps):
            run()
        wall_ms = (time.perf_counter() - start) * 1e3
    return str(latest_xplane(directory)), wall_ms


def latest_xplane(directory: str) -> pathlib.Path:
    """The newest `*.xplane.pb` under `directory` (jax.profiler.trace's log_dir, or the file)."""
    path = pathlib.Path(directory)
    if path.is_file():
        return path
    found = sorted(path.glob("plugins/profile/*/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"No plugins/profile/*/*.xplane.pb under {directory}.")
    return found[-1]


def gpu_kernels(xplane_path: str) -> list[Kernel]:
    """Every kernel and copy on the GPU streams of a trace (`*.xplane.pb`, as
    `jax.profiler.trace` writes it). Empty when the trace has no GPU (a CPU run)."""
    data = jax.profiler.ProfileData.from_file(str(xplane_path))
    kernels = []
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU:"):
            continue
        # "Stream #N" lines hold what ran; other lines (XLA Ops, Steps) are views of it.
        for line in plane.lines:
            if not line.name.startswith("Stream"):
                continue
            for event in line.events:
                op = str(dict(event.stats).get("hlo_op", ""))
                kernels.append(Kernel(event.name, op, event.start_ns, event.duration_ns))
    return kernels


def torch_trace(run: Callable[[], None], steps: int, path: str) -> tuple[list[Kernel], float]:
    """Runs `run` (one PyTorch step, synchronizing) `steps` times under `torch.profiler`;
    writes the Chrome trace to `path` (gzipped if it ends in ".gz"); returns its GPU kernels
    and the steps' wall time in ms."""
    import torch.profiler  # only here: the JAX side must not need torch

    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        start = time.perf_counter()
        for _ in range(steps):
            run()
        wall_ms = (time.perf_counter() - start) * 1e3
    profile.export_chrome_trace(path)  # gzipped, by the name's ".gz"
    return chrome_trace_kernels(path), wall_ms


def chrome_trace_kernels(path: str) -> list[Kernel]:
    """The GPU kernels, copies and memsets of a PyTorch (Kineto) Chrome trace, plain or
    gzipped JSON; its times are in microseconds."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as file:
        events = json.load(file)["traceEvents"]
    return [
        Kernel(event["name"], "", event["ts"] * 1e3, event["dur"] * 1e3)
        for event in events
        if event.get("ph") == "X" and event.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
    ]


def busy_ns(kernels: list[Kernel]) -> float:
    """Time during which at least one kernel runs: kernels on concurrent streams count once."""
    total, end = 0.0, float("-inf")
    for kernel in sorted(kernels, key=lambda k: k.start_ns):
        start, stop = kernel.start_ns, kernel.start_ns + kernel.duration_ns
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def summarize(
    kernels: list[Kernel],
    *,
    steps: int,
    wall_ms: float | None = None,
    flops_per_step: float | None = None,
    top: int = 8,
) -> str:
    """A text report of `kernels` traced over `steps` steps that took `wall_ms` in all
    (default: from the first kernel's start to the last one's end)."""
    if not kernels:
        return "The trace holds no GPU kernels (not a GPU run, or the profiler saw no device)."
    if wall_ms is None:
        first = min(kernel.start_ns for kernel in kernels)
        wall_ms = (max(kernel.start_ns + kernel.duration_ns for kernel in kernels) - first) / 1e6
    per_kind = collections.defaultdict(lambda: [0.0, 0])
    per_name = collections.defaultdict(lambda: [0.0, 0])
    for kernel in kernels:
        for table, key in ((per_kind, kind_of(kernel)), (per_name, kernel.name)):
            table[key][0] += kernel.duration_ns
            table[key][1] += 1
    busy_ms = busy_ns(kernels) / 1e6 / steps
    step_ms = wall_ms / steps
    lines = [
        f"GPU profile of {steps} steps: {step_ms:.2f} ms per step, kernels running "
        f"{busy_ms:.2f} ms ({busy_ms / step_ms:.0%}), GPU idle {step_ms - busy_ms:.2f} ms",
        "| kernel kind | ms/step | share of kernel time | kernels/step |",
        "| --- | --- | --- | --- |",
    ]
    kernel_ns = sum(kernel.duration_ns for kernel in kernels)
    for kind, (ns, count) in sorted(per_kind.items(), key=lambda item: -item[1][0]):
        lines.append(
            f"| {kind} | {ns / 1e6 / steps:.2f} | {ns / kernel_ns:.1%} | {count / steps:.0f} |"
        )
    if flops_per_step and "convolution" in per_kind:
        conv_s = per_kind["convolution"][0] / 1e9 / steps
        lines.append(
            f"Convolutions alone: {flops_per_step / conv_s / 1e12:.1f} TFLOP/s if the step's "
            f"{flops_per_step / 1e12:.2f} TFLOP were all theirs (the rate the step would reach "
            f"if every other kernel and gap took no time)"
        )
    lines.append(f"The {top} kernels that take longest in all:")
    for name, (ns, count) in sorted(per_name.items(), key=lambda item: -item[1][0])[:top]:
        shown = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"  {ns / 1e6 / steps:7.2f} ms/step  {count / steps:4.0f}×  {shown}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace", help="jax.profiler.trace's directory, or an *.xplane.pb in it")
    parser.add_argument("--steps", type=int, required=True, help="steps the trace covers")
    parser.add_argument(
        "--wall-ms", type=float, help="their measured wall time (default: the kernels' span)"
    )
    parser.add_argument("--gflop", type=float, help="one step's GFLOP (train_step prints it)")
    args = parser.parse_args()
    kernels = gpu_kernels(latest_xplane(args.trace))
    flops = args.gflop * 1e9 if args.gflop else None
    print(summarize(kernels, steps=args.steps, wall_ms=args.wall_ms, flops_per_step=flops))


if __name__ == "__main__":
    main()
