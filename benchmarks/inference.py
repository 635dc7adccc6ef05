"""Inference speed of each backbone with its YOLO head: batch-1 latency and batch-N throughput
of the model, and of the whole `Detector` on photos (resize and normalization on the host,
the model, decoding and NMS, boxes back to the host): one call per image, and `detect_batch`.

    python -m benchmarks.inference                                  # quick defaults
    python -m benchmarks.inference --image-size 448 --batch 16 --backbones darknet,resnet152

Defaults: on a GPU/TPU all backbones at 448×448 with batch 16 (the paper's setting); on CPU a
quick subset at 224 with batch 4 so the run stays within ~2 minutes on two cores. Each model
is jit-compiled and warmed up before timing; times are medians over repeated calls, each
waiting for the result (`block_until_ready`). References: the YOLOv1 paper runs at 45 FPS on
a Titan X (448×448, Darknet), the report's implementation at 56 FPS on a GTX 1060m.
"""

import importlib.util
import statistics
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from yolojax import cli, models
from yolojax.config import default_config

if TYPE_CHECKING:
    from yolojax.detector import Detector

# The Detector resizes photos with TensorFlow: without it (a bare accelerator image) its
# columns are left empty and the model's are still measured.
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None

PHOTO_SIZE = (480, 640)  # (height, width) of the photos the Detector is timed on: VGA


def default_head(backbone: str) -> str:
    """The head a user trains `backbone` with (:func:`common.user_config`): the paper's fc
    head for Darknet, the conv head for the ImageNet backbones and darknet_tiny."""
    return common.user_config(backbone).model.head


CPU_BACKBONES = ("darknet_tiny", "resnet18", "darknet")
REFERENCES = (
    "YOLOv1 paper (Redmon et al. 2016): 45 FPS, Titan X, 448×448, Darknet + fc head",
    "report: 56 FPS, GTX 1060m (backbone and input size not stated)",
)


def _time_calls(fn, *args, min_seconds: float, min_calls: int = 3) -> float:
    """Median wall time of `fn(*args)` over ≥ min_calls calls and ≥ min_seconds in total."""
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        tick = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def benchmark(
    backbone: str, head: str, image_size: int, batch: int, dtype: str, min_seconds: float
) -> dict:
    """Times one YOLO model; returns params, GFLOPs/image, latency and throughput."""
    model, variables, config = random_model(backbone, head, image_size, dtype)
    forward = jax.jit(lambda variables, images: model.apply(variables, images, train=False))
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
    result = {"backbone": backbone, "head": head, "params": num_params}
    for size in (1, batch):
        images = jax.random.normal(jax.random.key(1), (size, image_size, image_size, 3))
        compiled = forward.lower(variables, images).compile()
        if size == 1:
            result["gflops"] = forward_flops(config, variables, images, compiled) / 1e9
        jax.block_until_ready(compiled(variables, images))  # warm-up
        seconds = _time_calls(compiled, variables, images, min_seconds=min_seconds)
        result["latency_ms" if size == 1 else "throughput"] = (
            seconds * 1e3 if size == 1 else size / seconds
        )
    if HAS_TENSORFLOW:
        result |= _time_detector(model, variables, config, image_size, batch, min_seconds)
    return result


def forward_flops(model_config, variables, images, compiled) -> float:
    """FLOPs of the forward pass on ``images`` (:func:`common.model_flops`, as `train_step`
    counts: on a CPU, 'auto' computes small convolutions as padded matrix products).
    Without a CPU backend: the cost analysis of ``compiled``."""

    def lower_for_cpu(cpu):
        sharding = jax.sharding.make_single_device_sharding(cpu)
        xla_model = models.get_model({**model_config, "conv_impl": "xla"})
        forward = jax.jit(lambda variables, images: xla_model.apply(variables, images, train=False))
        return forward.lower(
            common.abstract_on(variables, sharding), common.abstract_on(images, sharding)
        )

    return common.model_flops(lower_for_cpu, lambda: common.xla_flops(compiled))


def random_model(backbone: str, head: str, image_size: int, dtype: str):
    """The YOLO model a user trains `backbone` with (:func:`common.user_config`: VOC's 20
    classes, or the synthetic shapes' 5 and their smaller head for darknet_tiny), with a
    `head` of that kind, of randomly initialized weights: (model, variables, its
    config.model)."""
    config = common.user_config(backbone).model
    config.update({"head": head, "dtype": dtype, "pretrained": ""})
    model = models.get_model(config)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(
        jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    )
    return model, variables, config


def make_detector(model, variables, model_config, image_size: int, **settings) -> "Detector":
    """A Detector of `model` at `image_size`, with the default config's other settings;
    `settings`: the Detector's thresholds."""
    cli.import_tensorflow()  # without its start-up notices
    from yolojax.detector import Detector

    run_config = default_config()
    run_config.model.update(model_config)
    run_config.data.image_size = image_size
    class_names = [f"class_{i}" for i in range(model_config.num_classes)]
    return Detector(model, variables, run_config, class_names, **settings)


def _time_detector(model, variables, model_config, image_size, batch, min_seconds) -> dict:
    """The whole Detector on random VGA photos: ms per photo called one at a time, and
    photos/s through `detect_batch` in batches of `batch`."""
    detector = make_detector(model, variables, model_config, image_size)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (*PHOTO_SIZE, 3), np.uint8) for _ in range(batch)]
    detector(photos[0]), detector.detect_batch(photos, batch_size=batch)  # compile
    one = _time_calls(detector, photos[0], min_seconds=min_seconds)
    together = _time_calls(detector.detect_batch, photos, min_seconds=min_seconds)
    return {"detector_ms": one * 1e3, "detector_throughput": batch / together}


def main() -> None:
    on_cpu = jax.default_backend() == "cpu"
    parser = common.argument_parser(__doc__, "benchmarks.inference")
    parser.add_argument(
        "--backbones",
        default=",".join(CPU_BACKBONES if on_cpu else models.BACKBONES),
        help="comma-separated backbone names",
    )
    parser.add_argument(
        "--head",
        choices=models.HEADS,
        help="head for all (default: the one each backbone trains with)",
    )
    parser.add_argument(
        "--image-size",
        type=common.positive_int,
        default=224 if on_cpu else 448,
        help="input side, pixels",
    )
    parser.add_argument(
        "--batch", type=common.positive_int, default=4 if on_cpu else 16, help="batch N"
    )
    parser.add_argument("--dtype", default="float32", choices=models.DTYPES, help="compute dtype")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=2.0 if on_cpu else 5.0,
        help="time each figure over at least this long (and 3 calls)",
    )
    args = parser.parse_args()
    backbones = [name.strip() for name in args.backbones.split(",") if name.strip()]
    unknown = sorted(set(backbones) - set(models.BACKBONES))
    if unknown:
        parser.error(f"unknown backbones {unknown}; valid: {', '.join(models.BACKBONES)}")

    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({jax.device_count()} × {device.platform}), "
        f"{args.image_size}×{args.image_size}, {args.dtype}"
    )
    busy = common.busy_machine_warning() if on_cpu else None
    if busy:
        print(busy)
    print(
        f"| backbone | head | params (M) | GFLOPs/img | batch 1: ms (FPS) | "
        f"batch {args.batch}: img/s | Detector, one photo: ms | "
        f"Detector, detect_batch({args.batch}): photos/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for backbone in backbones:
        head = args.head or default_head(backbone)
        try:
            r = benchmark(backbone, head, args.image_size, args.batch, args.dtype, args.min_seconds)
        except Exception as error:  # one model's failure (too small an input) keeps the others
            print(f"| {backbone} | {head} | failed: {type(error).__name__}: {error} |", flush=True)
            continue
        print(
            f"| {r['backbone']} | {r['head']} | {r['params'] / 1e6:.1f} | {r['gflops']:.1f} | "
            f"{r['latency_ms']:.1f} ({1e3 / r['latency_ms']:.1f}) | {r['throughput']:.1f} | "
            f"{_cell(r, 'detector_ms')} | {_cell(r, 'detector_throughput')} |",
            flush=True,
        )
    print("references: " + "; ".join(REFERENCES))
    if not HAS_TENSORFLOW:
        print("Detector columns: n/a, TensorFlow is not installed (it resizes the photos).")


def _cell(result: dict, key: str) -> str:
    return f"{result[key]:.1f}" if key in result else "n/a"


if __name__ == "__main__":
    with cli.ends_at_once_when_it_fails():  # `| head` ends quietly, a Ctrl-C at once
        main()
