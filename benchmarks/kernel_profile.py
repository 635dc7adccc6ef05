"""Where a compiled step's GPU time goes: a JAX profiler trace, summed by kind of kernel.

    python -m benchmarks.train_step --profile /tmp/trace ...   # traces the JAX step on a GPU
    python -m benchmarks.kernel_profile /tmp/trace/resnet152 --steps 3 --gflop 18157
    python -m benchmarks.kernel_profile /tmp/trace/resnet152/compile_cl.trace.json.gz --steps 3

The trace's kernels (each stream of each `/device:GPU:N` plane; for PyTorch, a Chrome trace's
GPU events) are sorted by their name and XLA op into convolutions (cuDNN's kernels, among
them the `nvjet` matrix-product kernels it picks for 1×1 convolutions), other matrix
products (for PyTorch also those `nvjet` kernels: its trace names no op), reductions and
elementwise kernels (BatchNorm statistics and normalization, activations, residual adds,
the loss, the optimizer), transposes and copies, and collectives. The report gives each
kind's time per step and share of the kernel time; the busy time (some kernel running)
against the measured wall time, and the longest gaps (the GPU waiting: between steps, for
the host; inside a step, launch gaps); and, given the step's FLOPs, the rate the
convolutions alone reach: the MFU that making everything else free would leave. Given the
compiled step's HLO text as well (`copies_by_source`; `train_step --profile` passes it), the
transposes and copies are sorted by what their HLO instruction does: a copy of a donated
argument, a copy into another layout, a copy of a computed value, a transpose.

On a GPU XLA runs its command buffers (CUDA graphs, on by default) op by op while a profiler
traces (`--xla_enable_command_buffers_during_profiling` is off by default): a traced JAX
step's gaps and time are then those of a step without them, unlike the timed steps' (and
unlike a PyTorch variant's CUDA graphs, which its profiler traces as they run). The report
says so where the trace holds XLA's event for it.
"""

import collections
import dataclasses
import gzip
import itertools
import json
import os
import pathlib
import re
from collections.abc import Callable

import jax

from benchmarks import common
from yolojax import cli

OTHER_KIND = "elementwise/other"
# First match wins. Inductor's Triton kernels first, by their prefix: their names list the ops
# they fuse ("triton_poi_fused__to_copy_convolution_72" is elementwise). A cuDNN kernel's name
# can contain "gemm" (implicit GEMM). Not "conv" alone: XLA names its dtype-cast fusions
# "loop_convert_fusion".
KINDS = (
    ("reduction", re.compile(r"^triton_(red|per)_")),
    (OTHER_KIND, re.compile(r"^triton_")),
    ("convolution", re.compile(r"conv(?!ert)|fprop|dgrad|wgrad|implicit_gemm|cudnn", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cublas|cutlass|\bdot", re.I)),
    ("collective", re.compile(r"nccl|all-?reduce|all-?gather", re.I)),
    ("transpose/copy", re.compile(r"transpose|memcpy|memset|copy", re.I)),
    # XLA's "input_reduce_fusion"; PyTorch's "batch_norm_collect_statistics_..._kernel".
    ("reduction", re.compile(r"reduce|collect_statistics", re.I)),
)


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


def _step_ms(run: Callable[[], None], steps: int) -> list[float]:
    """Wall time of each of `steps` calls of `run`, in ms."""
    seconds = common.time_alternating({"step": run}, rounds=1, steps_per_round=steps)["step"]
    return [value * 1e3 for value in seconds]


def trace(run: Callable[[], None], steps: int, directory: str) -> tuple[str, list[float]]:
    """Runs `run` (one step, waiting for its result) `steps` times under `jax.profiler.trace`
    into `directory`; returns the trace file (`*.xplane.pb`) and each step's wall time in ms."""
    with jax.profiler.trace(directory):
        step_ms = _step_ms(run, steps)
    return str(latest_xplane(directory)), step_ms


def latest_xplane(directory: str) -> pathlib.Path:
    """The newest `*.xplane.pb` under `directory` (jax.profiler.trace's log_dir, or the file)."""
    path = pathlib.Path(directory)
    if path.is_file():
        return path
    found = sorted(path.glob("plugins/profile/*/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"No plugins/profile/*/*.xplane.pb under {directory}.")
    return found[-1]


# The host event XLA's CommandBufferThunk records when it runs its thunks op by op, because a
# profiler is tracing (xla/backends/gpu/runtime/command_buffer_thunk.cc).
COMMAND_BUFFERS_OFF_EVENT = "CommandBuffer disabled when profiling"


def command_buffers_disabled(xplane_path: str | pathlib.Path) -> bool:
    """Whether a trace (`*.xplane.pb`) holds XLA's event for command buffers (CUDA graphs) run
    op by op while traced (`COMMAND_BUFFERS_OFF_EVENT`, on any plane)."""
    data = jax.profiler.ProfileData.from_file(str(xplane_path))
    return any(
        COMMAND_BUFFERS_OFF_EVENT in event.name
        for plane in data.planes
        for line in plane.lines
        for event in line.events
    )


def gpu_kernels(xplane_path: str | pathlib.Path) -> list[Kernel]:
    """Every kernel and copy on the first GPU's streams of a trace (`*.xplane.pb`, as
    `jax.profiler.trace` writes it): a step's FLOPs and time are one device's, and each device
    runs the same kernels. Empty when the trace has no GPU (a CPU run)."""
    data = jax.profiler.ProfileData.from_file(str(xplane_path))
    gpus = {
        int(found.group(1)): plane
        for plane in data.planes
        if (found := re.fullmatch(r"/device:GPU:(\d+)", plane.name))
    }
    if not gpus:
        return []
    kernels = []
    # "Stream #N" lines hold what ran; other lines (XLA Ops, Steps) are views of it.
    for line in gpus[min(gpus)].lines:
        if not line.name.startswith("Stream"):
            continue
        for event in line.events:
            op = str(dict(event.stats).get("hlo_op", ""))
            kernels.append(Kernel(event.name, op, event.start_ns, event.duration_ns))
    return kernels


def torch_trace(run: Callable[[], None], steps: int, path: str) -> tuple[list[Kernel], list[float]]:
    """Runs `run` (one PyTorch step, synchronizing) `steps` times under `torch.profiler`;
    writes the Chrome trace to `path` (gzipped if it ends in ".gz"); returns its GPU kernels
    and each step's wall time in ms."""
    import torch.profiler  # only here: the JAX side must not need torch

    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        step_ms = _step_ms(run, steps)
    profile.export_chrome_trace(path)  # gzipped, by the name's ".gz"
    return chrome_trace_kernels(path), step_ms


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


def busy_intervals(kernels: list[Kernel]) -> list[tuple[float, float]]:
    """The (start, end) ns of the stretches in which at least one kernel runs, in order:
    kernels that overlap (concurrent streams) or touch make one stretch."""
    stretches = []
    for kernel in sorted(kernels, key=lambda k: k.start_ns):
        start, end = kernel.start_ns, kernel.start_ns + kernel.duration_ns
        if stretches and start <= stretches[-1][1]:
            stretches[-1] = (stretches[-1][0], max(end, stretches[-1][1]))
        else:
            stretches.append((start, end))
    return stretches


def busy_ns(stretches: list[tuple[float, float]]) -> float:
    """Time during which at least one kernel runs, from `busy_intervals`: kernels on
    concurrent streams count once."""
    return sum(end - start for start, end in stretches)


def _time_and_count(kernels: list[Kernel], key_of: Callable[[Kernel], str]) -> dict:
    """{key: [total ns, number of kernels]} of `kernels` grouped by `key_of(kernel)`."""
    totals = collections.defaultdict(lambda: [0.0, 0])
    for kernel in kernels:
        total = totals[key_of(kernel)]
        total[0] += kernel.duration_ns
        total[1] += 1
    return totals


def summarize(
    kernels: list[Kernel],
    *,
    steps: int,
    step_ms: list[float] | None = None,
    flops_per_step: float | None = None,
    top: int = 8,
) -> str:
    """A text report of `kernels` traced over `steps` steps, whose wall times were `step_ms`
    (default: their total is the span from the first kernel's start to the last one's end).
    Figures per step are means over the steps; each step's time is printed, so that one slow
    step, which raises the mean idle time, can be seen."""
    if not kernels:
        return "The trace holds no GPU kernels (not a GPU run, or the profiler saw no device)."
    stretches = busy_intervals(kernels)
    if step_ms is None:
        wall_ms = (stretches[-1][1] - stretches[0][0]) / 1e6
        times = "the kernels' span"
    else:
        wall_ms = sum(step_ms)
        times = "steps of " + ", ".join(f"{ms:.1f}" for ms in step_ms) + " ms"
    gaps = sorted((b[0] - a[1] for a, b in itertools.pairwise(stretches)), reverse=True)
    per_kind = _time_and_count(kernels, kind_of)
    per_name = _time_and_count(kernels, lambda kernel: kernel.name)
    busy_ms = busy_ns(stretches) / 1e6 / steps
    mean_ms = wall_ms / steps
    # Of `steps` traced steps, steps - 1 longest gaps fall between them; the rest of the idle
    # time (those gaps, and before the first kernel and after the last) is around the steps.
    inside_ms = sum(gaps[steps - 1 :]) / 1e6 / steps
    lines = [
        f"GPU profile of {steps} steps ({times}): {mean_ms:.2f} ms per step, kernels "
        f"running {busy_ms:.2f} ms ({busy_ms / mean_ms:.0%}), GPU idle {mean_ms - busy_ms:.2f} ms",
        # Between steps, the host's turn (waiting for the result, dispatching the next step)
        # shows as the longest gaps; the gaps inside a step are the rest.
        f"Longest gaps between kernels: {', '.join(f'{gap / 1e6:.2f}' for gap in gaps[:steps])} "
        f"ms; all gaps between the first kernel and the last: {sum(gaps) / 1e6 / steps:.2f} ms "
        "per step",
        f"GPU idle inside a step (all gaps but the {steps - 1} longest): {inside_ms:.2f} ms; "
        f"around it (the host's turn): {mean_ms - busy_ms - inside_ms:.2f} ms",
        "| kernel kind | ms/step | share of kernel time | kernels/step |",
        "| --- | --- | --- | --- |",
    ]
    kernel_ns = sum(kernel.duration_ns for kernel in kernels)
    for kind, (ns, count) in sorted(per_kind.items(), key=lambda item: -item[1][0]):
        lines.append(
            f"| {kind} | {ns / 1e6 / steps:.2f} | {ns / kernel_ns:.1%} | {count / steps:.1f} |"
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
        lines.append(f"  {ns / 1e6 / steps:7.2f} ms/step  {count / steps:5.1f}×  {shown}")
    return "\n".join(lines)


def _entry_instructions(hlo_text: str) -> dict[str, tuple[str, str, list[str]]]:
    """{name: (opcode, shape with its layout, operand names)} of the instructions of an HLO
    module's ENTRY computation, as `Compiled.as_text()` prints them (the parameters, and the
    instructions a GPU runs as kernels of their own)."""
    entry = hlo_text.partition("\nENTRY ")[2].partition("\n}")[0]
    pattern = r"^\s*(?:ROOT )?%([\w.-]+) = (\S+) ([a-z][\w-]*)\((.*?)\)"
    return {
        name: (opcode, shape, re.findall(r"%([\w.-]+)", operands))
        for name, shape, opcode, operands in re.findall(pattern, entry, re.M)
    }


def copied_arguments(hlo_text: str) -> set[str]:
    """The parameters of an HLO module's ENTRY computation (the compiled function's arguments,
    named after them) that one of its copy instructions reads: for a donated argument, XLA
    saving it before it overwrites it in place (or putting it in another layout)."""
    instructions = _entry_instructions(hlo_text)
    return {
        operands[0]
        for opcode, _, operands in instructions.values()
        if opcode == "copy" and operands and instructions.get(operands[0], ("",))[0] == "parameter"
    }


def _copy_source(kernel: Kernel, instructions: dict) -> str:
    """What the HLO instruction behind a transpose or copy kernel does."""
    opcode, shape, operands = instructions.get(kernel.op, ("", "", []))
    if opcode == "transpose" or (opcode != "copy" and "transpose" in kernel.op):
        return "transposes"
    if opcode != "copy":
        return f"other ({opcode or 'not in the HLO'})"
    source_opcode, source_shape, _ = instructions.get(operands[0] if operands else "", ("", "", []))
    if source_shape and source_shape != shape:  # the same array in another layout
        return "copies into another layout"
    if source_opcode == "parameter":  # a donated argument saved before it is overwritten
        return "copies of an argument"
    return "copies of a computed value"


def copies_by_source(kernels: list[Kernel], hlo_text: str, *, steps: int) -> str:
    """The transposes and copies of a traced JAX step sorted by what their HLO instruction
    does, from the compiled step's HLO text: a copy of one of the step's arguments (a donated
    state array XLA saves before it overwrites it in place), a copy into another layout, a
    copy of a computed value, a transpose, or another instruction. One line of counts and
    ms per step; '' if the trace has none."""
    instructions = _entry_instructions(hlo_text)
    sources = _time_and_count(
        [kernel for kernel in kernels if kind_of(kernel) == "transpose/copy"],
        lambda kernel: _copy_source(kernel, instructions),
    )
    parts = [
        f"{source} {count / steps:.1f} ({ns / 1e6 / steps:.2f} ms)"
        for source, (ns, count) in sorted(sources.items(), key=lambda item: -item[1][1])
    ]
    return (
        "Transposes and copies per step, by their HLO instruction: " + "; ".join(parts)
        if parts
        else ""
    )


def jax_step_report(
    run: Callable[[], None], hlo_text: str, steps: int, directory: str, *, flops_per_step: float
) -> str:
    """Traces ``steps`` calls of ``run`` (a compiled step, ``hlo_text`` its HLO) into
    ``directory``, the HLO beside the trace (to tell its kernels apart by their ops); returns
    where the first device's time went, and the copies by what they copy."""
    xplane, step_ms = trace(run, steps, directory)
    pathlib.Path(directory, "train_step.hlo.txt").write_text(hlo_text)
    kernels = gpu_kernels(xplane)
    summary = summarize(kernels, steps=steps, step_ms=step_ms, flops_per_step=flops_per_step)
    copies = copies_by_source(kernels, hlo_text, steps=steps)
    if command_buffers_disabled(xplane):
        summary += (
            "\nXLA ran its command buffers (CUDA graphs) op by op while traced: the traced "
            "steps' gaps and times are without them, the timed steps' with them"
        )
    return f"profile written to {xplane}\n{summary}" + (f"\n{copies}" if copies else "")


def torch_step_report(run: Callable[[], None], steps: int, path: str) -> str:
    """Traces ``steps`` calls of ``run`` (a PyTorch step) into the Chrome trace ``path``;
    returns where the time went."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kernels, step_ms = torch_trace(run, steps, path)
    summary = summarize(kernels, steps=steps, step_ms=step_ms)
    return f"profile written to {path}\n{summary}"


def main() -> None:
    parser = common.argument_parser(__doc__, "benchmarks.kernel_profile")
    parser.add_argument(
        "trace",
        help="jax.profiler.trace's directory or an *.xplane.pb in it; or a PyTorch Chrome "
        "trace (*.json, *.json.gz)",
    )
    parser.add_argument(
        "--steps", type=common.positive_int, required=True, help="steps the trace covers"
    )
    parser.add_argument(
        "--step-ms",
        type=float,
        nargs="+",
        help="each step's measured wall time (default: their sum is the kernels' span)",
    )
    parser.add_argument(
        "--gflop",
        type=float,
        help="one device's GFLOP a step (the trace's kernels are the first device's): "
        "train_step's 'GFLOP per image' times the batch per device",
    )
    args = parser.parse_args()
    if args.step_ms is not None and len(args.step_ms) != args.steps:
        parser.error(f"--step-ms gives {len(args.step_ms)} times for --steps {args.steps}")
    if not os.path.exists(args.trace):
        parser.error(f"no such trace file or folder: {args.trace}")
    if args.trace.endswith((".json", ".json.gz")):
        kernels = chrome_trace_kernels(args.trace)
    else:
        try:
            xplane = latest_xplane(args.trace)
        except FileNotFoundError as error:  # a folder without a trace
            parser.error(str(error))
        kernels = gpu_kernels(xplane)
    flops = args.gflop * 1e9 if args.gflop else None
    print(summarize(kernels, steps=args.steps, step_ms=args.step_ms, flops_per_step=flops))


if __name__ == "__main__":
    with cli.ends_at_once_when_it_fails():  # `| head` ends quietly, a Ctrl-C at once
        main()
