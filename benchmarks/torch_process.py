"""The PyTorch reference's steps on a CPU, run in a process of their own.

In one process the two frameworks slow each other down on a CPU: measured step by step
(BENCHMARKS.md, "The targets", the 1323fe3 rows), a JAX step timed right after PyTorch's
ran 2.2-3.4 s against 1.45-1.9 s with JAX alone, and PyTorch's own steps alternated 1.8 and
3.7 s under the huge-page malloc that the script sets for XLA. Neither happens when each
trains in a process of its own, as users run them. So on a CPU `benchmarks/train_step.py`
builds and runs PyTorch's steps here, in a child process, still timed in turns with JAX's
(the parent waits for each call's reply); the child runs with glibc's default malloc,
PyTorch's faster setting on this project's hosts. On a GPU the reference stays in the
benchmark's process, where the GPU figures were measured.
"""

import contextlib
import functools
import multiprocessing
import os

from yolojax import huge_pages


class ReferenceProcess:
    """A child process holding PyTorch reference steps (`torch_train_step.build_step`).

    Use as a context manager; :meth:`build_step` returns what `torch_train_step.build_step`
    does on a CPU, its 'run' calling into the child. An error in the child (a variant that
    fails to build) is raised here as :class:`ReferenceFailed` with its message.
    """

    def __init__(self, config, batch: dict, *, threads: int):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter, no JAX state
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child_end, config, batch, threads), daemon=True
        )
        saved = os.environ.get("GLIBC_TUNABLES")
        without = glibc_tunables()
        try:  # the child's environment is this process's when it starts
            _set_environ("GLIBC_TUNABLES", without)
            self._process.start()
        finally:
            _set_environ("GLIBC_TUNABLES", saved)
        child_end.close()
        self.glibc_tunables = without

    def build_step(self, variant: str, warmup_steps: int) -> dict:
        """Builds `variant` in the child and runs its warm-up steps. Returns {'run':
        `run(count=1)`, which runs `count` steps there and returns once they are done,
        'warmup_s': the warm-up's seconds}."""
        warmup_s = self._ask("build", variant, warmup_steps)
        return {"run": functools.partial(self._run, variant), "warmup_s": warmup_s}

    def _run(self, variant: str, count: int = 1) -> None:
        self._ask("run", variant, count)

    def _ask(self, *request):
        self._connection.send(request)
        try:
            succeeded, value = self._connection.recv()
        except EOFError:
            self._process.join(timeout=5)
            raise ReferenceFailed(
                f"the PyTorch process ended (exit code {self._process.exitcode})"
            ) from None
        if not succeeded:
            raise ReferenceFailed(value)
        return value

    def close(self) -> None:
        """Ends the child (its memory goes back to the system)."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):  # a child that just ended (a broken pipe)
                self._connection.send(None)
            self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()

    def __enter__(self) -> "ReferenceProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ReferenceFailed(RuntimeError):
    """A PyTorch reference step failed in its process (the message is the child's error)."""


def glibc_tunables() -> str | None:
    """The ``GLIBC_TUNABLES`` a `ReferenceProcess` started now runs with: this process's
    without `huge_pages.TUNABLE` (None when nothing is left)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    kept = [item for item in tunables.split(":") if item and item != huge_pages.TUNABLE]
    return ":".join(kept) or None


def _set_environ(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _serve(connection, config, batch: dict, threads: int) -> None:
    """The child: builds and runs steps as the parent asks, until it sends None."""
    import torch

    from benchmarks import torch_train_step

    torch.set_num_threads(threads)
    steps = {}
    while (request := connection.recv()) is not None:
        kind, variant, number = request
        try:
            if kind == "build":
                steps[variant] = torch_train_step.build_step(
                    config, batch, variant, torch.device("cpu"), number
                )
                reply = steps[variant]["warmup_s"]
            else:
                reply = steps[variant]["run"](number)
        except Exception as error:  # sent, not raised: the parent names it and goes on
            connection.send((False, f"{type(error).__name__}: {error}"))
        else:
            connection.send((True, reply))
