"""Benchmark: one convolution's forward + backward pass on the CPU in JAX (XLA's convolution
and the matrix-product form of `yolojax.models.conv`) and in PyTorch, layer by layer.

    python -m benchmarks.conv                      # ResNet-50's layer shapes at 224, batch 8
    python -m benchmarks.conv --model darknet_tiny --image-size 112 --batch 16   # configs/shapes.py

It explains the train-step figures of `benchmarks/train_step.py` (BENCHMARKS.md, "Train
step"): which convolutions XLA's CPU backend runs slower than PyTorch, and where computing
them as one matrix product (what `config.model.conv_impl='auto'` does on a CPU) wins. Each
case is `sum(conv(x, w)²)` with its gradients for the input and the kernel, jitted (JAX)
or eager in channels-last memory format (PyTorch), timed in turns, median of the calls.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import common
from configs import shapes
from yolojax import cli
from yolojax.models import conv, darknet

# (name, map size, C_in, C_out, kernel, stride) at 224 px: ResNet-50's stem and a layer of
# each kind in each stage (not the 1×1 reduces of stages 2-4, whose FLOPs are their expands',
# nor the stride-2 convolutions and projections), and the conv head's first layer (2048 →
# 1024 on the 7×7 map).
RESNET50_LAYERS = (
    ("stem 7×7/2", 224, 3, 64, 7, 2),
    ("layer1 1×1 reduce", 56, 256, 64, 1, 1),
    ("layer1 3×3", 56, 64, 64, 3, 1),
    ("layer1 1×1 expand", 56, 64, 256, 1, 1),
    ("layer2 3×3", 28, 128, 128, 3, 1),
    ("layer2 1×1 expand", 28, 128, 512, 1, 1),
    ("layer3 3×3", 14, 256, 256, 3, 1),
    ("layer3 1×1 expand", 14, 256, 1024, 1, 1),
    ("layer4 3×3", 7, 512, 512, 3, 1),
    ("layer4 1×1 expand", 7, 512, 2048, 1, 1),
    ("head 3×3", 7, 2048, 1024, 3, 1),
)


def darknet_tiny_layers(image_size: int) -> tuple:
    """configs/shapes.py's convolutions at `image_size`, in RESNET50_LAYERS' format: the
    tiny Darknet's, then the conv head's on the S×S grid."""
    layers, size, channels = [], image_size, 3
    for layer in darknet.DARKNET_TINY:
        if layer == darknet.MAXPOOL:
            size //= 2
            continue
        layers.append((f"conv_{len(layers)}", size, channels, layer.features, layer.kernel, 1))
        channels = layer.features
    model = shapes.get_config().model
    grid = model.grid_size
    # As `yolojax.models.yolo.ConvHead`: a 2S×2S map goes into a stride-2 first conv.
    size, stride = (size, 2) if size == 2 * grid else (grid, 1)
    for index in range(model.head_conv_layers):
        name = f"head conv_{index}"
        layers.append((name, size, channels, model.head_channels, 3, stride))
        size, stride, channels = grid, 1, model.head_channels
    return tuple(layers)


COLUMNS = (
    ("layer", "layer"),
    ("shape", "input → output"),
    ("gflop", "GFLOP fwd+bwd"),
    ("xla", "JAX XLA conv ms"),
    ("dot", "JAX matrix product ms"),
    ("torch", "PyTorch ms"),
    ("auto", "'auto' picks"),
    ("ratio", "PyTorch / JAX 'auto'"),
)


def _jax_step(impl: str, strides, padding):
    def loss(x, kernel):
        numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
        y = conv.conv_general_dilated(
            x, kernel, strides, padding, dimension_numbers=numbers, conv_impl=impl
        )
        return jnp.sum(y * y)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def benchmark(name, size, c_in, c_out, kernel, stride, batch, rounds) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, c_in), np.float32)
    w = (
        rng.standard_normal((kernel, kernel, c_in, c_out)) / np.sqrt(kernel * kernel * c_in)
    ).astype(np.float32)
    pad = kernel // 2
    padding, strides = ((pad, pad), (pad, pad)), (stride, stride)
    steps, x_jax, w_jax = {}, jnp.asarray(x), jnp.asarray(w)
    for impl in ("xla", "dot"):
        step = _jax_step(impl, strides, padding)
        jax.block_until_ready(step(x_jax, w_jax))
        steps[impl] = lambda step=step: jax.block_until_ready(step(x_jax, w_jax))
    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    x_torch.requires_grad_(True)
    w_torch = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous().requires_grad_(True)

    def torch_step():
        x_torch.grad = w_torch.grad = None
        y = torch.nn.functional.conv2d(x_torch, w_torch, stride=stride, padding=pad)
        (y * y).sum().backward()

    torch_step()
    steps["torch"] = torch_step
    times = common.time_alternating(steps, rounds=rounds, steps_per_round=3)
    ms = {key: common.median(values) * 1e3 for key, values in times.items()}
    out = (size + 2 * pad - kernel) // stride + 1
    # Forward, input gradient and kernel gradient: 3 × 2 FLOPs per multiply-add (the stem's
    # input gradient is computed too, unlike in a train step).
    gflop = 3 * 2 * batch * out * out * c_out * kernel * kernel * c_in / 1e9
    uses_dot = conv.uses_dot(x.shape, w.shape, strides, padding, "auto")
    auto = "dot" if uses_dot else "xla"
    return {
        "layer": name,
        "shape": f"{size}²×{c_in} → {out}²×{c_out}",
        "gflop": f"{gflop:.2f}",
        "xla": f"{ms['xla']:.1f}",
        "dot": f"{ms['dot']:.1f}",
        "torch": f"{ms['torch']:.1f}",
        "auto": auto,
        "ratio": f"{ms['torch'] / ms[auto]:.2f}",
    }


def main() -> None:
    parser = common.argument_parser(__doc__, "benchmarks.conv")
    parser.add_argument(
        "--model",
        choices=("resnet50", "darknet_tiny"),
        default="resnet50",
        help="whose layer shapes",
    )
    parser.add_argument(
        "--image-size",
        type=common.positive_int,
        default=None,
        help="input side, pixels: darknet_tiny's layers at any (default 112), resnet50's at 224",
    )
    parser.add_argument("--batch", type=common.positive_int, default=8, help="batch")
    parser.add_argument(
        "--rounds", type=common.positive_int, default=3, help="rounds of 3 calls each, in turns"
    )
    parser.add_argument(
        "--torch-threads",
        type=common.positive_int,
        default=len(os.sched_getaffinity(0)),
        help="PyTorch's CPU threads",
    )
    args = parser.parse_args()
    if args.model == "resnet50":
        if args.image_size not in (None, 224):
            parser.error("--image-size: the ResNet-50 layer shapes are those at 224")
        image_size, layers = 224, RESNET50_LAYERS
    else:
        image_size = args.image_size or 112
        layers = darknet_tiny_layers(image_size)
    torch.set_num_threads(args.torch_threads)
    load_before, busy = common.load_average(), common.busy_machine_warning()
    rows = [benchmark(*layer, args.batch, args.rounds) for layer in layers]
    print(
        f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}); CPU "
        f"{common.cpu_model()}, {os.cpu_count()} cores; PyTorch threads {args.torch_threads}"
    )
    print(f"Versions: {common.versions(('jax', 'jaxlib', 'torch'))}")
    print(
        f"{args.model} layers at {image_size}, "
        f"batch {args.batch}, float32, forward + both gradients; {args.rounds} rounds × 3 calls; "
        f"load average before {load_before}, after {common.load_average()}"
    )
    if busy:
        print(busy)
    print(common.markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    with cli.ends_at_once_when_it_fails():  # `| head` ends quietly, a Ctrl-C at once
        main()
