"""The PyTorch side of `benchmarks/train_step.py`: the reference's variants, the device it
runs on, and a variant's step built and warmed up.

Imported before anything that may import TensorFlow: in one process, TensorFlow imported
before torchvision crashes. Without a usable torch the benchmark gives JAX's figures alone
and its header says why (`TORCH_MISSING`).
"""

import time

try:
    import torch

    from benchmarks import torch_reference

    TORCH_MISSING = ""
# Any error, not just ImportError: a torchvision built for another torch raises RuntimeError.
except Exception as error:
    torch = torch_reference = None
    TORCH_MISSING = f"{type(error).__name__}: {error}"

# (channels_last, torch.compile's mode or None for eager) per variant name.
VARIANTS = {
    "eager": (False, None),
    "eager_cl": (True, None),
    "compile": (False, "default"),
    "compile_cl": (True, "default"),
    # The compiled forward + loss and its backward replayed as CUDA graphs (the optimizer
    # step stays eager): PyTorch's fastest variant on an H200 (BENCHMARKS.md).
    "compile_cl_graphs": (True, "reduce-overhead"),
}


def reference_device(args, on_cpu: bool):
    """(the device of the PyTorch reference, None) or (None, why it does not run), from the
    benchmark's arguments (`torch_variants`, `devices`, `torch_threads`)."""
    if torch is None:
        return None, f"not installed or not importable ({TORCH_MISSING})"
    if not args.torch_variants:
        return None, "--torch-variants none"
    if args.devices != 1:
        return None, "the reference is single-device; run with --devices 1"
    if on_cpu:
        torch.set_num_threads(args.torch_threads)
        return torch.device("cpu"), None
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} sees no CUDA device"
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")  # TF32, as XLA's default precision on GPU
    return torch.device("cuda"), None


def build_step(config, batch: dict, variant: str, device, warmup_steps: int) -> dict:
    """Builds the PyTorch reference step of `variant` and runs its warm-up calls (where
    `torch.compile` compiles), timed.

    Returns:
      'run': `run(count=1)` runs `count` steps, then waits for the last;
      'warmup_s': the warm-up's seconds; on CUDA 'memory': this variant's peak bytes.
    On an error (torch.compile, out of memory) the CUDA memory it took is freed for the
    variants after it, and the error raised."""
    channels_last, compile_mode = VARIANTS[variant]
    if device.type == "cuda":  # this variant's peak, without what earlier variants still hold
        memory_before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    try:
        step = torch_reference.TrainStep(
            config,
            config.data.image_size,
            device,
            dtype=config.model.dtype,
            channels_last=channels_last,
            compile=compile_mode,
        )
        tensors = step.to_device(batch)

        def run(count: int = 1) -> None:
            """`count` steps, then one wait (CUDA launches are asynchronous; a CPU's are not)."""
            for _ in range(count):
                step(*tensors)
            if device.type == "cuda":
                torch.cuda.synchronize()

        start = time.perf_counter()
        for _ in range(warmup_steps):
            run()
    except Exception:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise
    result = {"run": run, "warmup_s": time.perf_counter() - start}
    if device.type == "cuda":
        result["memory"] = torch.cuda.max_memory_allocated() - memory_before
    return result
