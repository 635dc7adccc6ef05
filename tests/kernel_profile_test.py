"""benchmarks/kernel_profile.py sorts a trace's GPU kernels into kinds and adds up their time
correctly: what BENCHMARKS.md says about where a GPU step's time goes rests on it."""

import gzip
import json
import re

import jax
import jax.numpy as jnp
import pytest

from benchmarks import kernel_profile
from benchmarks.kernel_profile import Kernel


@pytest.mark.parametrize(
    "name, op, kind",
    [
        # cuDNN's Hopper convolution kernels: forward, input and filter gradients.
        (
            "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64",
            "",
            "convolution",
        ),
        ("sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nchw", "", "convolution"),
        ("sm80_xmma_wgrad_implicit_gemm_indexed_bf16bf16_bf16f32_f32", "", "convolution"),
        ("cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816fprop>", "", "convolution"),
        # A kernel named for nothing, placed by the XLA op it runs.
        ("kernel_17", "cudnn-conv-bw-filter.3", "convolution"),
        # cuBLAS on Hopper, and a GEMM fusion.
        ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NNT", "", "matmul"),
        ("gemm_fusion_dot_3", "", "matmul"),
        # XLA's own fusions: a dtype cast is not a convolution.
        ("loop_convert_fusion_2", "", "elementwise/other"),
        ("loop_multiply_fusion_14", "", "elementwise/other"),
        ("input_reduce_fusion_7", "", "reduction"),
        # Inductor's kernels by their prefix, whatever ops their names list.
        (
            "triton_red_fused__native_batch_norm_legit_functional_convolution_backward_3",
            "",
            "reduction",
        ),
        ("triton_per_fused_add_mean_4", "", "reduction"),
        ("triton_poi_fused__to_copy_convolution_72", "", "elementwise/other"),
        # PyTorch eager's BatchNorm statistics.
        ("void at::native::batch_norm_collect_statistics_channels_last_kernel", "", "reduction"),
        ("loop_transpose_fusion", "", "transpose/copy"),
        ("MemcpyD2D", "", "transpose/copy"),
        ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "", "collective"),
    ],
)
def test_kernels_are_sorted_by_name_and_op(name, op, kind):
    assert kernel_profile.kind_of(Kernel(name, op, 0.0, 1.0)) == kind


def test_busy_time_counts_overlapping_kernels_once():
    kernels = [
        Kernel("a", "", 0, 10),  # [0, 10)
        Kernel("b", "", 5, 10),  # [5, 15): 5 more
        Kernel("c", "", 20, 5),  # [20, 25): 5 more
        Kernel("d", "", 21, 1),  # inside c
    ]
    assert kernel_profile.busy_ns(kernel_profile.busy_intervals(kernels)) == 20
    assert kernel_profile.busy_intervals(kernels) == [(0, 15), (20, 25)]


def test_summary_gives_each_kinds_time_per_step_and_the_idle_time():
    ms = 1e6  # ns
    kernels = [  # two steps of 50 ms each; per step 30 ms of convolution, 10 ms of fusion
        Kernel("sm90_xmma_fprop_implicit_gemm", "", 0, 30 * ms),
        Kernel("loop_add_fusion", "", 30 * ms, 10 * ms),
        Kernel("sm90_xmma_fprop_implicit_gemm", "", 50 * ms, 30 * ms),
        Kernel("loop_add_fusion", "", 80 * ms, 10 * ms),
    ]
    text = kernel_profile.summarize(kernels, steps=2, step_ms=[45, 55], flops_per_step=3e12)
    assert "2 steps (steps of 45.0, 55.0 ms): 50.00 ms per step" in text
    assert "kernels running 40.00 ms (80%), GPU idle 10.00 ms" in text
    assert "| convolution | 30.00 | 75.0% | 1.0 |" in text
    assert "| elementwise/other | 10.00 | 25.0% | 1.0 |" in text
    # The gaps: 30-30 (touching: none), 40-50 between the steps, 80-80 (none).
    assert "Longest gaps between kernels: 10.00 ms; all gaps between the first kernel" in text
    assert "and the last: 5.00 ms per step" in text
    # That one gap is the step boundary: no idle time inside a step, all 10 ms around it.
    assert "inside a step (all gaps but the 1 longest): 0.00 ms; around it" in text
    assert "(the host's turn): 10.00 ms" in text
    assert "Convolutions alone: 100.0 TFLOP/s" in text  # 3 TFLOP in 30 ms
    # Without a measured wall time: the kernels' span, 0 to 90 ms.
    text = kernel_profile.summarize(kernels, steps=2)
    assert "(the kernels' span): 45.00 ms per step, kernels running 40.00 ms (89%)" in text


def test_kernels_are_read_from_the_gpu_streams_of_a_trace_file(tmp_path):
    # An XSpace as the profiler writes it: kernels on a stream line, the same time again on a
    # derived "XLA Ops" line, and a host plane; times in picoseconds from the line's start.
    # Of a step on two GPUs, the first's: the step's FLOPs are one device's (the second's
    # kernels were added in, twice the time a step).
    xspace = """
    planes {
      id: 3 name: "/device:GPU:1"
      lines { id: 1 name: "Stream #13(compute)" timestamp_ns: 1000
        events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000 } }
      event_metadata { key: 1 value { id: 1 name: "sm90_xmma_fprop" } }
    }
    planes {
      id: 1 name: "/device:GPU:0"
      lines { id: 1 name: "Stream #13(compute)" timestamp_ns: 1000
        events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000
                 stats { metadata_id: 1 str_value: "cudnn-conv.3" } }
        events { metadata_id: 2 offset_ps: 6000000 duration_ps: 1000000 } }
      lines { id: 2 name: "XLA Ops" timestamp_ns: 1000
        events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000 } }
      event_metadata { key: 1 value { id: 1 name: "sm90_xmma_fprop" } }
      event_metadata { key: 2 value { id: 2 name: "loop_add_fusion" } }
      stat_metadata { key: 1 value { id: 1 name: "hlo_op" } }
    }
    planes { id: 2 name: "/host:CPU" }
    """
    path = tmp_path / "host.xplane.pb"
    path.write_bytes(jax.profiler.ProfileData.text_proto_to_serialized_xspace(xspace))
    assert kernel_profile.gpu_kernels(str(path)) == [
        Kernel("sm90_xmma_fprop", "cudnn-conv.3", 1000.0, 5000.0),
        Kernel("loop_add_fusion", "", 7000.0, 1000.0),
    ]


def test_xlas_command_buffers_run_op_by_op_while_traced_are_noticed(tmp_path, monkeypatch):
    # XLA's CommandBufferThunk runs its thunks one by one under a profiler and records a host
    # event saying so: the traced JAX steps then ran without XLA's CUDA graphs.
    xspace = """
    planes { id: 1 name: "/host:CPU"
      lines { id: 1 name: "XLA GPU thread" timestamp_ns: 1000
        events { metadata_id: 1 offset_ps: 0 duration_ps: 1000 } }
      event_metadata { key: 1 value { id: 1
        name: "WARNING: CommandBuffer disabled when profiling" } }
    }
    """
    path = tmp_path / "host.xplane.pb"
    path.write_bytes(jax.profiler.ProfileData.text_proto_to_serialized_xspace(xspace))
    assert kernel_profile.command_buffers_disabled(path)
    other = tmp_path / "other.xplane.pb"
    other.write_bytes(
        jax.profiler.ProfileData.text_proto_to_serialized_xspace(xspace.replace("disabled", "on"))
    )
    assert not kernel_profile.command_buffers_disabled(other)
    hlo = "HloModule m\n\nENTRY %main {\n  ROOT %a = f32[] parameter(0)\n}\n"
    monkeypatch.setattr(kernel_profile, "trace", lambda run, steps, directory: (str(path), [1.0]))
    monkeypatch.setattr(kernel_profile, "gpu_kernels", lambda xplane: [Kernel("k", "", 0, 1e5)])
    report = kernel_profile.jax_step_report(lambda: None, hlo, 1, str(tmp_path), flops_per_step=1e9)
    assert "XLA ran its command buffers (CUDA graphs) op by op while traced" in report
    assert (tmp_path / "train_step.hlo.txt").read_text() == hlo


def test_a_cpu_trace_is_written_and_said_to_hold_no_gpu_kernels(tmp_path):
    square = jax.jit(lambda x: jnp.tanh(x @ x))
    x = jnp.ones((64, 64))

    def run():
        square(x).block_until_ready()

    run()
    xplane, step_ms = kernel_profile.trace(run, steps=2, directory=str(tmp_path))
    assert xplane.endswith(".xplane.pb") and len(step_ms) == 2 and min(step_ms) > 0
    assert kernel_profile.latest_xplane(str(tmp_path)) == kernel_profile.latest_xplane(xplane)
    assert kernel_profile.gpu_kernels(xplane) == []
    assert "no GPU kernels" in kernel_profile.summarize([], steps=2, step_ms=step_ms)


def test_kernels_are_read_from_a_pytorch_chrome_trace(tmp_path):
    # Kineto's Chrome trace: CPU ops and runtime calls beside the GPU's kernels and copies,
    # times in microseconds.
    trace = {
        "traceEvents": [
            {"ph": "X", "cat": "cpu_op", "name": "aten::conv2d", "ts": 1.0, "dur": 50.0},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 2.0, "dur": 3.0},
            {"ph": "X", "cat": "kernel", "name": "sm90_xmma_fprop", "ts": 10.0, "dur": 4.5},
            {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "ts": 20.0, "dur": 1.0},
            {"ph": "M", "cat": "kernel", "name": "process_name", "ts": 0.0},
        ]
    }
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as file:
        json.dump(trace, file)
    assert kernel_profile.chrome_trace_kernels(str(path)) == [
        Kernel("sm90_xmma_fprop", "", 10_000.0, 4_500.0),
        Kernel("Memcpy HtoD", "", 20_000.0, 1_000.0),
    ]


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the point of this test
def test_a_pytorch_cpu_trace_is_written_and_holds_no_gpu_kernels(tmp_path):
    torch = pytest.importorskip("torch")
    x = torch.ones(64, 64)
    path = tmp_path / "step.trace.json.gz"
    kernels, step_ms = kernel_profile.torch_trace(lambda: (x @ x).sum(), 2, str(path))
    assert kernels == [] and len(step_ms) == 2
    with gzip.open(path, "rt") as file:  # the CPU ops are there: the trace is complete
        assert any(event.get("name") == "aten::matmul" for event in json.load(file)["traceEvents"])


def test_command_line_summarizes_a_saved_pytorch_trace(tmp_path, monkeypatch, capsys):
    trace = {"traceEvents": [{"ph": "X", "cat": "kernel", "name": "gemm", "ts": 0, "dur": 8e3}]}
    path = tmp_path / "eager_cl.trace.json"
    path.write_text(json.dumps(trace))
    argv = ["kernel_profile", str(path), "--steps", "2", "--step-ms", "5", "7"]
    monkeypatch.setattr("sys.argv", argv)
    kernel_profile.main()
    out = capsys.readouterr().out
    # One 8 ms kernel over 2 steps that took 12 ms: 4 ms per step of 6.
    assert "(steps of 5.0, 7.0 ms): 6.00 ms per step, kernels running 4.00 ms (67%)" in out
    assert "| matmul | 4.00 | 100.0% | 0.5 |" in out


HLO = """HloModule step

%fused_transpose (p: f32[2,3]) -> f32[3,2] {
  %p = f32[2,3]{1,0} parameter(0)
  ROOT %copy.9 = f32[3,2]{1,0} transpose(%p), dimensions={1,0}
}

ENTRY %main (a: f32[4], b: f32[2,3]) -> (f32[4], f32[2,3], f32[3,2], f32[3,2]) {
  %a = f32[4]{0} parameter(0)
  %b = f32[2,3]{1,0} parameter(1)
  %copy.1 = f32[4]{0} copy(%a)
  %add = f32[4]{0} add(%copy.1, %copy.1)
  %copy.2 = f32[4]{0} copy(%add)
  %copy.3 = f32[2,3]{0,1} copy(%b)
  %transpose.4 = f32[3,2]{1,0} transpose(%b), dimensions={1,0}
  %loop_transpose_fusion = f32[3,2]{1,0} fusion(%b), kind=kLoop, calls=%fused_transpose
  ROOT %tuple = (f32[4]{0}, f32[2,3]{0,1}) tuple(%copy.2, %copy.3)
}
"""


def test_copies_are_sorted_by_what_their_hlo_instruction_copies():
    ms = 1e6  # ns
    kernels = [  # two steps of the HLO above, each kernel 1 ms (the memset 2 ms)
        Kernel(name, op, 0, duration * ms)
        for _ in range(2)
        for name, op, duration in [
            ("MemcpyD2D", "copy.1", 1),  # the argument %a, saved before it is overwritten
            ("MemcpyD2D", "copy.2", 1),  # a computed value
            ("copy_kernel", "copy.3", 1),  # %b into a column-major layout
            ("transpose_kernel", "transpose.4", 1),
            ("loop_transpose_fusion", "loop_transpose_fusion", 1),
            ("Memset", "", 2),  # no instruction: what the HLO does not name
            ("sm90_xmma_fprop_implicit_gemm", "convolution.5", 7),  # not a copy: left out
        ]
    ]
    line = kernel_profile.copies_by_source(kernels, HLO, steps=2)
    assert line.startswith("Transposes and copies per step, by their HLO instruction: ")
    assert "transposes 2.0 (2.00 ms)" in line
    assert "copies of an argument 1.0 (1.00 ms)" in line
    assert "copies of a computed value 1.0 (1.00 ms)" in line
    assert "copies into another layout 1.0 (1.00 ms)" in line
    assert "other (not in the HLO) 1.0 (2.00 ms)" in line
    assert kernel_profile.copies_by_source(kernels[-1:], HLO, steps=2) == ""


def test_copies_of_donated_arguments_are_found_in_a_compiled_step():
    # Each update needs only its own gradient, so XLA:CPU copies the scale it may overwrite
    # before the backward pass's last read of it: real HLO text, as the benchmark reads it.
    def step(params, x):
        def loss(params):
            return jnp.sum(jnp.tanh(x @ params["w"]) * params["s"]) ** 2

        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    params = {"w": jnp.ones((8, 8)), "s": jnp.ones((8,))}
    hlo = jax.jit(step, donate_argnums=0).lower(params, jnp.ones((2, 8))).compile().as_text()
    copied = kernel_profile.copied_arguments(hlo)
    assert copied and all(name.startswith("params") for name in copied), hlo
    copy = re.search(rf"%([\w.]+) = \S+ copy\(%{re.escape(min(copied))}\)", hlo).group(1)
    line = kernel_profile.copies_by_source([Kernel("MemcpyD2D", copy, 0, 1e6)], hlo, steps=1)
    assert "copies of an argument 1.0 (1.00 ms)" in line
