"""Benchmark: the compiled YOLO train step in images/s, side by side with a PyTorch reference.

    python -m benchmarks.train_step                                    # quick default, < 2 min
    python -m benchmarks.train_step --backbone darknet,resnet50 --batch 8 --image-size 224
    python -m benchmarks.train_step --backbone resnet152 --batch 64 --image-size 448 \\
        --dtype bfloat16                                               # on a GPU

Per backbone (configs/voc.py's variant, configs/shapes.py for darknet_tiny; no pretrained
weights), on random images and boxes already on the device:

* JAX: `yolojax.train_lib.make_train_step` exactly as the trainer runs it (compiled over
  the devices, donated state, targets encoded on the device, optimizer update). Compile
  time, images/s (median of the timed steps after two warm-up steps, each waiting for its
  result with `block_until_ready`), the train step's FLOPs per image from XLA's cost
  analysis of the step lowered (not compiled) for the CPU with XLA's own convolutions
  (`--conv-impl` does not change the count), hence achieved TFLOP/s and, on a known
  accelerator, MFU; peak device memory (on a CPU: the compiled step's buffer plan).
* PyTorch: `benchmarks/torch_reference.py`, the same model, targets, loss and optimizer,
  in each requested variant (eager or `torch.compile`, NCHW or channels-last; for GPUs
  also `compile_cl_graphs`, torch.compile with CUDA graphs); on a CPU in a process of its
  own (`benchmarks/torch_process.py`: in one process the two slowed each other's steps),
  on a GPU in this one; timed in turns
  with the JAX step (a round of JAX steps, then a round of each variant, repeated; each
  turn's first step untimed, since it pays for the memory the previous turn used) so a
  slow spell of the machine hits every turn. Not so other work on a CPU: it slows
  PyTorch's threads far more than XLA's (the header warns of a busy CPU). The ratio is JAX
  images/s over the best variant's.
* `--back-to-back`: also JAX's and each PyTorch variant's images/s with a round's steps
  dispatched one after the other and one wait at the end, as the trainer runs them (the main
  figures wait for each step's result): on a GPU the host's turn between steps then
  overlaps the previous step's kernels.
* `--compare-config KEY=VALUE` (repeatable; `--compare-conv-impl IMPL` is short for
  `--compare-config model.conv_impl=IMPL`), `--compare-auto-layout`: also the JAX step with
  those config fields changed (`train.skip_nonfinite=True`, say), or with the train state in
  the layouts XLA picks for it (`jax.jit` with `Layout.AUTO` formats), timed in turn with
  the others (and back to back, after a slash, with `--back-to-back`).
* `--profile DIR`: the JAX step's kernels, traced with `jax.profiler` over one round of steps
  before the timing (trace files and the compiled step's HLO text in DIR/<backbone>) and
  summed by kind (`benchmarks/kernel_profile.py`): convolutions, fusions, copies, GPU idle
  time; on a GPU each PyTorch variant's too, with `torch.profiler`
  (DIR/<backbone>/<variant>.trace.json.gz).
* decode + NMS: `jax.jit(yolojax.postprocess.detect_with_config)` (as evaluation runs it,
  with the config's `eval` settings) on random outputs of one device's batch (`--batch`
  over `--devices`: each device decodes its own).

On Linux CPUs the script restarts itself with huge pages for malloc as `train.py` does
(`yolojax.huge_pages`; `YOLOJAX_HUGE_PAGES=0` for glibc's default); the PyTorch process runs
with glibc's default malloc, its faster one. The header prints each process's
`GLIBC_TUNABLES`.

The images/s of the JAX step is also what the input pipeline must deliver for training not to
be input-bound: compare it with `python -m benchmarks.input_pipeline`.

The header and each figure print as soon as they are known (`[backbone] ...` lines), and the
table at the end: a run cut short by a time limit still shows what it measured. A PyTorch
variant that fails to build or warm up (torch.compile, out of memory) is named in the table
and the others run; a backbone that fails later prints its traceback and the next one runs.
"""

import argparse
import ast
import contextlib
import functools
import os
import sys
import traceback

from yolojax import huge_pages

if __name__ == "__main__":
    # First, as train.py's cli.launch does: a restart after the imports below would load
    # JAX and PyTorch twice, 4 s of every run's start (and of --help) on 2 cores.
    huge_pages.restart_with_huge_pages()

# JAX must not take 75% of the GPU up front: the PyTorch reference runs in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# XLA's warnings stay (1): on a GPU they explain a slow compile (a ptxas or driver fallback).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax

# torch_train_step imports torch and torchvision, which must come before anything that
# imports TensorFlow (nothing this script imports does: tests/imports_test.py).
from benchmarks import common, jax_train_step, kernel_profile, torch_process, torch_train_step
from yolojax import cli, errors, models, postprocess
from yolojax.outputs import output_channels

CPU_DEFAULTS = {"backbone": "darknet_tiny,resnet18", "batch": 8, "image_size": 160}
ACCELERATOR_DEFAULTS = {"backbone": "resnet152", "batch": 64, "image_size": 448}
WARMUP_STEPS = 2
AHEAD = "_ahead"  # the name suffix of a step function timed back to back (--back-to-back)
# Config keys that shape the random batch (made once, for the main config), and the flag
# that sets them where it has one.
_BATCH_KEYS = {
    "data.image_size": " (--image-size)",
    "train.batch_size": " (--batch)",
    "data.max_boxes": "",
    "model.num_classes": "",
}


def decode_nms_seconds(config, batch_size: int, calls: int = 10) -> float:
    """Median time of jitted decode + NMS (as evaluation runs it, with the config's
    `eval` settings) on one random batch."""
    s, classes, boxes = config.model.grid_size, config.model.num_classes, config.model.num_boxes
    detect = jax.jit(functools.partial(postprocess.detect_with_config, config=config))
    # Uniform [0, 1) outputs: most boxes score above the threshold, the costly case for NMS.
    channels = output_channels(classes, boxes)
    outputs = jax.random.uniform(jax.random.key(0), (batch_size, s, s, channels))
    jax.block_until_ready(detect(outputs))
    times = common.time_alternating(
        {"detect": lambda: jax.block_until_ready(detect(outputs))}, rounds=1, steps_per_round=calls
    )
    return common.median(times["detect"])


def _progress(backbone: str, message: str) -> None:
    """A figure as soon as it is measured: a run cut short (a time limit, a failure) still
    shows what it got."""
    print(f"[{backbone}] {message}", flush=True)


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {errors.first_line(error)}"


def _device_peak(device) -> int:
    """The device's peak bytes in use so far in this process (0 where it keeps none)."""
    return (device.memory_stats() or {}).get("peak_bytes_in_use", 0)


def _jax_memory(device, jax_step: dict, peak_before: int) -> str:
    """The device's peak memory once the step has run; the compiled step's buffer plan
    where the device keeps no peak (a CPU) or where an earlier backbone's peak was as high
    (the device's peak is never reset, so it would be that backbone's)."""
    peak = _device_peak(device)
    if peak > peak_before:
        return f"{peak / 2**30:.2f} GiB"
    return f"{jax_step['plan_bytes'] / 2**30:.2f} GiB (plan)"


def _torch_steps(
    config, batch: dict, args, torch_device, backbone: str, closing: contextlib.ExitStack
) -> tuple[dict, dict]:
    """(variant → built and warmed-up step, variant → why it failed). A variant that fails
    (torch.compile, out of memory) is reported and left out; the others still run. On a CPU
    the steps run in a process of their own (`torch_process`), which `closing` ends."""
    if torch_device.type == "cpu":
        reference = closing.enter_context(
            torch_process.ReferenceProcess(config, batch, threads=args.torch_threads)
        )
        build = functools.partial(reference.build_step, warmup_steps=WARMUP_STEPS)
    else:
        build = functools.partial(
            torch_train_step.build_step,
            config,
            batch,
            device=torch_device,
            warmup_steps=WARMUP_STEPS,
        )
    built, failed = {}, {}
    for variant in args.torch_variants:
        try:
            built[variant] = build(variant)
        except Exception as error:
            failed[variant] = _one_line(error)
            _progress(backbone, f"PyTorch {variant}: failed, {failed[variant]}")
            continue
        if args.profile and torch_device.type == "cuda":  # a failure here is printed, not raised
            path = os.path.join(args.profile, backbone, f"{variant}.trace.json.gz")
            try:
                report = kernel_profile.torch_step_report(
                    built[variant]["run"], args.steps_per_round, path
                )
            except Exception as error:
                report = f"profile failed, {_one_line(error)}"
            _progress(backbone, f"PyTorch {variant}: {report}")
        memory = built[variant].get("memory")
        _progress(
            backbone,
            f"PyTorch {variant}: built and warmed up in {built[variant]['warmup_s']:.1f} s"
            + (f", peak {memory / 2**30:.2f} GiB" if memory is not None else ""),
        )
    return built, failed


def _per_step_and_ahead(images_per_s: dict, name: str) -> str:
    """A compared JAX step's images/s, and back to back after a slash if timed so."""
    if name not in images_per_s:
        return ""
    ahead = images_per_s.get(name + AHEAD)
    return f"{images_per_s[name]:.2f}" + (f" / {ahead:.2f}" if ahead is not None else "")


def benchmark(backbone: str, args, devices: list, torch_device, peak: float) -> dict:
    """One table row: JAX and PyTorch figures for `backbone`; each figure is also printed as
    soon as it is measured."""
    config = jax_train_step.benchmark_config(
        backbone, args.image_size, args.batch, args.dtype, args.conv_impl
    )
    batch = jax_train_step.random_batch(config, args.batch)
    peak_before = _device_peak(devices[0])
    jax_step = jax_train_step.build_step(config, batch, devices)
    for _ in range(WARMUP_STEPS):
        jax_step["run"]()
    flops_per_image = jax_step["flops_per_step"] / args.batch
    memory = _jax_memory(devices[0], jax_step, peak_before)  # before other steps add to it
    _progress(
        backbone,
        f"JAX: compiled in {jax_step['compile_s']:.1f} s, {flops_per_image / 1e9:.2f} GFLOP "
        f"per image, memory {memory}, "
        f"{jax_step['all_reduces']} all-reduce ops and {jax_step['state_copies']} copied state "
        "arrays in the compiled step",
    )
    if args.profile:  # before PyTorch's turn: a run cut short by a time limit still has it
        report = kernel_profile.jax_step_report(
            jax_step["run"],
            jax_step["hlo"],
            args.steps_per_round,
            os.path.join(args.profile, backbone),
            flops_per_step=jax_step["flops_per_step"] / len(devices),  # the first device's
        )
        _progress(backbone, report)
    steps = {"jax": jax_step["run"], "jax_host": jax_step["run_host_batch"]}
    if args.compare_config:  # the same step with other config values, timed in turn
        other_config = jax_train_step.with_overrides(config, args.compare_config)
        other_step = jax_train_step.build_step(other_config, batch, devices)
        for _ in range(WARMUP_STEPS):
            other_step["run"]()
        changed = ", ".join(f"{key}={value!r}" for key, value in args.compare_config.items())
        _progress(
            backbone,
            f"JAX with {changed}: compiled in {other_step['compile_s']:.1f} s, "
            f"{other_step['state_copies']} copied state arrays",
        )
        steps["jax_other"] = other_step["run"]
    if args.compare_auto_layout:  # the same step with the state in XLA's layouts, in turn
        auto_step = jax_train_step.build_step(config, batch, devices, auto_layout=True)
        for _ in range(WARMUP_STEPS):
            auto_step["run"]()
        _progress(
            backbone,
            f"JAX, state in XLA's layouts: compiled in {auto_step['compile_s']:.1f} s, "
            f"{auto_step['layout_note']}, {auto_step['state_copies']} copied state arrays",
        )
        steps["jax_auto_layout"] = auto_step["run"]
    torch_steps, torch_failed = {}, {}
    with contextlib.ExitStack() as torch_processes:
        if torch_device is not None:
            torch_steps, torch_failed = _torch_steps(
                config, batch, args, torch_device, backbone, torch_processes
            )
            steps.update({variant: step["run"] for variant, step in torch_steps.items()})
        # Back to back: a round's steps as one call, one wait at the end (no per-step wait).
        ahead = {
            f"{name}{AHEAD}": functools.partial(run, args.steps_per_round)
            for name, run in steps.items()
            if args.back_to_back and name != "jax_host"
        }
        times = common.time_alternating(
            {**steps, **ahead},
            rounds=args.rounds,
            steps_per_round=args.steps_per_round,
            untimed_per_round=args.untimed_per_round,
        )
    images_per_s = {
        name: args.batch * (args.steps_per_round if name in ahead else 1) / common.median(values)
        for name, values in times.items()
    }
    _progress(
        backbone,
        "images/s: " + ", ".join(f"{name} {value:.2f}" for name, value in images_per_s.items()),
    )

    achieved = flops_per_image * images_per_s["jax"]
    row = {
        "backbone": backbone,
        "head": config.model.head,
        "optimizer": config.train.optimizer,
        "params": f"{jax_step['num_params'] / 1e6:.1f}M",
        "jax": f"{images_per_s['jax']:.2f}",
        "jax_host": f"{images_per_s['jax_host']:.2f}",
        **{
            name: _per_step_and_ahead(images_per_s, name)
            for name in ("jax_other", "jax_auto_layout")
        },
        "compile": f"{jax_step['compile_s']:.1f}",
        "gflop": f"{flops_per_image / 1e9:.2f}",
        "tflops": f"{achieved / 1e12:.3f}",
        "mfu": f"{achieved / peak:.1%}",
        "memory": memory,
        "decode": f"{decode_nms_seconds(config, args.batch // len(devices)) * 1e3:.2f}",
    }
    row["torch_all"] = ", ".join(
        [
            f"{name} {images_per_s[name]:.2f} (warm-up {torch_steps[name]['warmup_s']:.0f} s)"
            for name in torch_steps
        ]
        + [f"{name} failed ({why})" for name, why in torch_failed.items()]
    )
    if torch_steps:
        best = max(torch_steps, key=images_per_s.get)
        row["torch"] = f"{images_per_s[best]:.2f} ({best})"
        row["ratio"] = f"{images_per_s['jax'] / images_per_s[best]:.2f}"
        if "memory" in torch_steps[best]:
            row["torch_memory"] = f"{torch_steps[best]['memory'] / 2**30:.2f} GiB"
    if ahead:
        row["jax_ahead"] = f"{images_per_s['jax' + AHEAD]:.2f}"
        if torch_steps:
            best = max(torch_steps, key=lambda name: images_per_s[name + AHEAD])
            row["torch_ahead"] = f"{images_per_s[best + AHEAD]:.2f} ({best})"
    return row


COLUMNS = (
    ("backbone", "backbone"),
    ("head", "head"),
    ("optimizer", "opt"),
    ("params", "params"),
    ("jax", "JAX img/s"),
    ("torch", "PyTorch img/s (best variant)"),
    ("ratio", "JAX / PyTorch"),
    ("jax_host", "JAX img/s, NumPy batch"),
    ("jax_ahead", "JAX img/s, back to back"),
    ("torch_ahead", "PyTorch img/s, back to back"),
    ("jax_other", "JAX img/s, --compare-config (/ back to back)"),
    ("jax_auto_layout", "JAX img/s, --compare-auto-layout (/ back to back)"),
    ("compile", "JAX compile s"),
    ("gflop", "train GFLOP/img"),
    ("tflops", "JAX TFLOP/s"),
    ("mfu", "of peak"),
    ("memory", "JAX memory"),
    ("torch_memory", "PyTorch memory"),
    ("decode", "decode+NMS ms/device batch"),
    ("torch_all", "PyTorch variants img/s"),
)


def parse_args(on_cpu: bool) -> argparse.Namespace:
    defaults = CPU_DEFAULTS if on_cpu else ACCELERATOR_DEFAULTS
    parser = common.argument_parser(__doc__, "benchmarks.train_step")
    parser.add_argument(
        "--backbone",
        default=defaults["backbone"],
        help=f"comma-separated, from {', '.join(models.BACKBONES)}",
    )
    parser.add_argument(
        "--batch", type=common.positive_int, default=defaults["batch"], help="global batch"
    )
    parser.add_argument(
        "--image-size",
        type=common.positive_int,
        default=defaults["image_size"],
        help="input side, pixels",
    )
    parser.add_argument(
        "--dtype",
        choices=models.DTYPES,
        default="float32",
        help="compute dtype of both frameworks",
    )
    parser.add_argument(
        "--conv-impl",
        choices=models.CONV_IMPLS,
        default="auto",
        help="config.model.conv_impl of the JAX model (see yolojax.models.conv)",
    )
    parser.add_argument(
        "--compare-config",
        action="append",
        type=_override,
        default=[],
        metavar="KEY=VALUE",
        help="also time the JAX step with this config field changed (e.g. "
        "train.skip_nonfinite=True; repeat for several), in turn with the others",
    )
    parser.add_argument(
        "--compare-conv-impl",
        choices=models.CONV_IMPLS,
        help="short for --compare-config model.conv_impl=IMPL",
    )
    parser.add_argument(
        "--compare-auto-layout",
        action="store_true",
        help="also time the JAX step with the train state in the layouts XLA picks for it "
        "(jax.jit with Layout.AUTO formats), in turn with the others",
    )
    parser.add_argument(
        "--devices", type=common.positive_int, default=1, help="local devices to train on"
    )
    parser.add_argument(
        "--rounds", type=common.positive_int, default=3, help="alternating timing rounds"
    )
    parser.add_argument(
        "--steps-per-round",
        type=common.positive_int,
        default=3,
        help="timed steps of each framework in each round",
    )
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help="also time each round's steps dispatched back to back with one wait at the end, "
        "as the trainer runs them (the main figures wait for each step)",
    )
    parser.add_argument(
        "--untimed-per-round",
        type=common.nonnegative_int,
        default=1,
        help="steps each framework runs untimed at the start of its turn: on a CPU the first "
        "step after the other framework's turn can be up to 2x slower (see BENCHMARKS.md)",
    )
    parser.add_argument(
        "--torch-variants",
        default="eager,eager_cl" if on_cpu else "compile_cl_graphs,compile_cl,eager_cl",
        help=f"comma-separated from {', '.join(torch_train_step.VARIANTS)}, or 'none'",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="trace the JAX step's (and on a GPU, PyTorch's) kernels into DIR/<backbone> "
        "and print where the time went",
    )
    parser.add_argument(
        "--torch-threads",
        type=common.positive_int,
        default=len(os.sched_getaffinity(0)),
        help="torch.set_num_threads on CPU (XLA's CPU client uses every core it may run on)",
    )
    args = parser.parse_args()
    if args.compare_conv_impl:
        args.compare_config.append(("model.conv_impl", args.compare_conv_impl))
    args.compare_config = dict(args.compare_config)
    args.backbone = args.backbone.split(",")
    args.torch_variants = [] if args.torch_variants == "none" else args.torch_variants.split(",")
    for name in args.backbone:
        if name not in models.BACKBONES:
            parser.error(f"--backbone {name!r} is not one of {models.BACKBONES}")
    for name in args.torch_variants:
        if name not in torch_train_step.VARIANTS:
            parser.error(
                f"--torch-variants {name!r} is not one of {tuple(torch_train_step.VARIANTS)}"
            )
    if args.devices < 1 or args.devices > jax.local_device_count():
        parser.error(f"--devices must be in [1, {jax.local_device_count()}]")
    if args.batch % args.devices:
        parser.error("--batch must be a multiple of --devices")
    config = jax_train_step.benchmark_config(
        args.backbone[0], args.image_size, args.batch, args.dtype, args.conv_impl
    )
    try:  # what the trainer would refuse, now
        jax_train_step.with_overrides(config, {})
    except ValueError as error:
        parser.error(f"--batch {args.batch}, --image-size {args.image_size}: {error}")
    shaping = sorted(set(args.compare_config) & set(_BATCH_KEYS))
    if shaping:  # the compared steps share one batch, made for the main config
        parser.error(
            f"--compare-config: {shaping[0]} shapes the batch that the compared steps share "
            f"(made for the main config): time each value in a run of its own"
            f"{_BATCH_KEYS[shaping[0]]}"
        )
    try:  # a mistyped key fails now, not after minutes of compiling the first step
        jax_train_step.with_overrides(config, args.compare_config)
    except (KeyError, AttributeError) as error:  # ConfigDict's message quotes the name
        name = error.args[0] if error.args else error
        parser.error(f"--compare-config: unknown config key: {name}")
    except (TypeError, ValueError) as error:
        parser.error(f"--compare-config: {error}")
    return args


def _override(text: str) -> tuple[str, object]:
    """``'train.skip_nonfinite=True'`` → ``('train.skip_nonfinite', True)``: the value as a
    Python literal where it is one, else as text (``model.conv_impl=xla``)."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"wants KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main() -> None:
    on_cpu = jax.default_backend() == "cpu"
    args = parse_args(on_cpu)
    devices = jax.local_devices()[: args.devices]
    torch_device, torch_skipped = torch_train_step.reference_device(args, on_cpu)
    # The run's facts first, so that a run cut short still says what it ran on.
    threads = f"; PyTorch threads {args.torch_threads}" if torch_device and on_cpu else ""
    print(
        f"Device: {devices[0].device_kind} × {len(devices)} ({jax.default_backend()}); "
        f"CPU {common.cpu_model()}, {os.cpu_count()} cores{threads}"
    )
    print(f"Versions: {common.versions(('jax', 'jaxlib', 'flax', 'optax', 'torch'))}")
    print(
        f"Image {args.image_size}×{args.image_size}, global batch {args.batch}, {args.dtype}, "
        f"JAX conv_impl {args.conv_impl}; "
        f"{args.rounds} rounds × {args.steps_per_round} timed steps per framework, each round "
        f"after {args.untimed_per_round} untimed, all after {WARMUP_STEPS} warm-up steps; "
        f"load average before {common.load_average()}"
    )
    if on_cpu:  # glibc's malloc settings change both frameworks' CPU figures (BENCHMARKS.md)
        tunables = f"GLIBC_TUNABLES: {os.environ.get('GLIBC_TUNABLES', '(not set)')}"
        if torch_device:  # PyTorch's steps run in a process of their own (torch_process)
            tunables += f" (JAX); {torch_process.glibc_tunables() or '(not set)'} (PyTorch)"
        print(tunables)
        warning = common.busy_machine_warning()
        if warning:
            print(warning)
    else:  # how much of the GPU JAX may take beside PyTorch
        xla_env = {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_"))}
        print(f"XLA/JAX environment: {xla_env}")
    if torch_skipped:
        print(f"PyTorch reference: not run, {torch_skipped}")
    peak = common.peak_flops(devices[0].device_kind, args.dtype)
    if peak is None:  # no datasheet figure (a CPU, an unknown GPU): what a big matmul achieves
        peak = common.matmul_flops_per_second(devices[0], args.dtype)
        where = "the CPU's cores" if on_cpu else f"one {devices[0].device_kind}"
        print(
            f"Peak: {peak / 1e12:.3f} TFLOP/s measured by a 2048² {args.dtype} matmul on "
            f"{where} (timed once, before the steps)"
        )
    else:
        print(f"Peak per device: {peak / 1e12:.1f} TFLOP/s dense {args.dtype} datasheet peak")
    if not on_cpu:  # CPU devices all share the cores, which one device's matmul used already
        peak *= len(devices)
    sys.stdout.flush()
    rows = []
    for backbone in args.backbone:
        try:
            rows.append(benchmark(backbone, args, devices, torch_device, peak))
        except Exception as error:  # one model's failure (out of memory) keeps the others'
            traceback.print_exc()
            rows.append({"backbone": backbone, "jax": f"failed: {_one_line(error)}"})
    print(f"Load average after: {common.load_average()}")
    print(common.markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    with cli.ends_at_once_when_it_fails():  # `| head` ends quietly, a Ctrl-C at once
        main()
