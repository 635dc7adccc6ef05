"""Stopping training cleanly on SIGTERM or Ctrl-C: save the step reached, then exit.

A cluster scheduler that preempts a job sends SIGTERM and, after a grace period, SIGKILL; a
user presses Ctrl-C. Killed outright, a run loses the steps since its last checkpoint. While
a :class:`StopSignals` is active the trainer asks :meth:`StopSignals.should_stop` after every
step; once it says yes, the trainer saves a checkpoint of that step and raises
:class:`TrainingStopped`, and ``train.py`` exits with status 128 + the signal's number (143
for SIGTERM, 130 for Ctrl-C), as a process killed by that signal would.

The last step is no exception: a scheduler's grace period is too short to spend evaluating.
A signal during a step due for evaluation saves it and stops without evaluating it, and in
one process a signal during an evaluation of the steps cuts it short at its next batch (its
step is saved before it starts); the rerun evaluates that step first ("Evaluating step N,
which was saved but not evaluated."), then trains on, or ends there after the last. Once the
last step's evaluation is through (:meth:`StopSignals.run_finished`), the run has finished:
a signal then only says so, and the run exits with status 0 once its files are written.

* One process: SIGTERM and the first Ctrl-C only set a flag, and say so on stderr. The same
  signal again acts at once, with the handler that was there before (a second Ctrl-C raises
  ``KeyboardInterrupt``, a second SIGTERM terminates, or in a command raises
  :class:`yolojax.errors.Terminated`, a KeyboardInterrupt: ``yolojax.cli.launch``). A signal
  the process ignores stays ignored: a background job that a script (a non-interactive
  shell) starts ignores SIGINT, so ``kill -INT`` does nothing there; :class:`StopSignals`
  warns of it and names SIGTERM.
* Several processes (``jax.distributed``): every process takes part in a save, so all must
  stop after the same step. JAX's preemption service already catches SIGTERM in each process
  (for the whole job: a second SIGTERM does nothing, only SIGKILL ends a process at once) and
  has the processes agree on a step
  (:func:`jax.experimental.multihost_utils.reached_preemption_sync_point`); this asks it. It
  agrees on the step after the highest one any process last reported, counting from 0, so a
  resumed job reports its checkpoint's step before it initializes the model and restores it
  (:func:`report_resumed_step`); a notice that comes earlier, in the first seconds of the
  job, is not acted on. A Ctrl-C reaches one process only: it interrupts that process at
  once, as without this.
"""

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

from yolojax import errors

# Where the first signal is acted on; the handler cannot know the step.
_FIRST_SIGNAL = (
    "\n{name} received: training stops after the current step, with a checkpoint of it; an "
    "evaluation due, or still going through its images, is left to the rerun."
)
_AGAIN = {
    signal.SIGINT: " Press Ctrl-C again to stop at once.",
    signal.SIGTERM: " A second SIGTERM stops at once, without that checkpoint.",
}
# After the run's last evaluation (StopSignals.run_finished): nothing is left to stop.
_FINISHED = "\n{name} received: the run has finished, and exits once its files are written."
_FINISHED_AGAIN = {
    signal.SIGINT: " Press Ctrl-C again to stop at once.",
    signal.SIGTERM: " A second SIGTERM stops at once.",
}


def _reached_sync_point(step: int) -> bool:
    """JAX's preemption sync point; False where the job turned the service off."""
    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # jax_enable_preemption_service=False (orbax reads it the same way)
        return False


def report_resumed_step(step: int) -> None:
    """Tells JAX's preemption service the step a multi-process job resumes from.

    Call it in every process as soon as the step is known, before compiling and training: a
    notice before the first step would otherwise pick step 1, which a resumed job never
    reaches, and the job would train on until SIGKILL. Nothing in a single-process job.
    """
    if jax.process_count() > 1:
        _reached_sync_point(step)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal, after saving a checkpoint of the step it had reached.

    A ``KeyboardInterrupt``, as the signal's are (:class:`yolojax.errors.Terminated` for
    SIGTERM): code that carries on past an ``Exception``, a sweep over configs in a notebook,
    stops with it, as it does for a Ctrl-C anywhere else.

    Attributes:
      signal_number: the signal that asked for the stop (``signal.SIGTERM`` or ``SIGINT``).
      step: the step saved; rerunning the same command resumes from it.
      exit_status: 128 + ``signal_number``, the status of a process killed by that signal.
      last: ``step`` is the run's last, saved but not evaluated: the rerun only evaluates it.
    """

    def __init__(self, signal_number: int, step: int, checkpoint_dir, *, last: bool = False):
        self.signal_number, self.step, self.last = signal_number, step, last
        self.exit_status = 128 + signal_number
        name = signal.Signals(signal_number).name
        if last:
            message = (
                f"Stopped on {name} after step {step}, the last, saved in {checkpoint_dir} but "
                "not evaluated: rerun the same command to evaluate it."
            )
        else:
            message = (
                f"Stopped on {name} after step {step}, saved in {checkpoint_dir}: rerun the "
                "same command to resume from it."
            )
        super().__init__(message)


class StopSignals:
    """A context manager: while active, SIGTERM and Ctrl-C ask the training loop to stop.

    Use::

        with StopSignals() as stop:
            for step in ...:
                ...
                if stop.should_stop(step):  # every step, in every process
                    save(step)
                    raise TrainingStopped(stop.received, step, ...)

    Outside the main thread (where Python cannot handle signals) it changes nothing, and
    ``should_stop`` is always False in a single-process job.
    """

    def __init__(self):
        self.received: int | None = None  # the first signal's number, before run_finished
        self._previous: dict[int, object] = {}
        self._finished = False

    def __enter__(self) -> "StopSignals":
        if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
            return self
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signal_number)
            if previous is not signal.SIG_IGN:
                self._previous[signal_number] = previous
                signal.signal(signal_number, self._handle)
        if signal.SIGINT not in self._previous and signal.SIGTERM in self._previous:
            errors.notice(
                "This process ignores Ctrl-C (SIGINT), as a background job started by a script "
                f"does: to stop training with a checkpoint, use kill -TERM {os.getpid()}.",
            )
        return self

    def __exit__(self, *exc_info) -> None:
        for signal_number, previous in self._previous.items():
            # A handler set meanwhile (the trainer's ``on_finished``) is left in place.
            if signal.getsignal(signal_number) == self._handle:
                signal.signal(signal_number, previous)
        self._previous = {}

    def _handle(self, signal_number: int, frame) -> None:
        del frame
        if self.received is None and not self._finished:
            self.received = signal_number
        previous = self._previous.pop(signal_number, None)
        if previous is None:  # the same signal again, before this handler gave way
            return
        # The same signal again acts at once; the other one still waits for the save.
        signal.signal(signal_number, previous)
        first, again = (_FINISHED, _FINISHED_AGAIN) if self._finished else (_FIRST_SIGNAL, _AGAIN)
        message = first.format(name=signal.Signals(signal_number).name) + again[signal_number]
        # os.write: the handler may run while the main thread is inside print().
        os.write(2, (message + "\n").encode())

    def run_finished(self) -> bool:
        """Says that the run's last step is evaluated: a signal from here on does not stop
        it, only says that it finishes. Returns whether a signal came before (the trainer
        then stops all the same, leaving that evaluation to the rerun, as it said it would).

        Checking and switching in one call leaves no moment between them for a signal.
        """
        self._finished = True
        return self.received is not None

    def should_stop(self, step: int) -> bool:
        """Whether training should save ``step`` and stop; call it after every step.

        In a multi-process job every process must call it for every step, from the step
        after the one given to :func:`report_resumed_step` (JAX's preemption protocol): it
        is True in all of them after the same step.
        """
        if jax.process_count() > 1 and _reached_sync_point(step):
            self.received = signal.SIGTERM
        return self.received is not None
