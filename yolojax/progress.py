"""What a training run shows as it goes: the summary before its first step, the progress
bar, the means of the metrics it logs, and a line per epoch for logs without the bar.

Only process 0 prints (`yolojax.trainer`).
"""

import contextlib
import math
import sys
import time
import warnings

import jax
import numpy as np
from tqdm import tqdm

from yolojax import distributed, errors
from yolojax.losses import LOSS_TERMS
from yolojax.train_lib import NonFiniteLossError


def run_summary(
    config, info, params, *, steps_per_epoch: int, total_steps: int, eval_every: int
) -> str:
    """What a run is about to train, in one paragraph: the model and its size, the data and
    its classes (a class misspelled in one annotation shows up here as one more class), the
    devices, and the schedule of steps and evaluations."""
    model, data = config.model, config.data
    num_params = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
    source = f"{data.source} ({data.folder})" if data.source == "voc_folder" else data.source
    names = errors.first_few(info.class_names, 10)
    devices = jax.devices()
    evaluations = "at the end"
    if 0 < eval_every < total_steps:
        evaluations = f"every {errors.count(eval_every, 'step')} and at the end"
    return (
        f"Training {model.backbone} with the {model.head} head ({num_params / 1e6:.2f} M "
        f"parameters, {model.dtype}) on {source}: {info.num_train_examples} train and "
        f"{info.num_eval_examples} {info.eval_split_name} images of "
        f"{errors.count(len(info.class_names), 'class', 'classes')} ({names}) at "
        f"{data.image_size}×{data.image_size}. Batch {config.train.batch_size} over "
        f"{errors.count(len(devices), devices[0].platform.upper() + ' device')}: "
        f"{errors.count(steps_per_epoch, 'step')} an epoch, {errors.count(total_steps, 'step')} "
        f"in all; evaluation on the {info.eval_split_name} split {evaluations}."
    )


class MetricWindow:
    """Collects per-step device metrics between two log points; fetched in one transfer.

    Args:
      stop_on_nonfinite: raise for a non-finite step (else it was skipped: count it).
    """

    def __init__(self, stop_on_nonfinite: bool):
        self.stop_on_nonfinite = stop_on_nonfinite
        self.steps, self.metrics, self.start = [], [], None

    def add(self, step: int, metrics) -> None:
        if not self.steps:  # timed from its first step's dispatch: not the compilation, nor
            self.start = time.perf_counter()  # an evaluation or a save since the last flush
        self.steps.append(step)
        self.metrics.append(metrics)

    def flush(self, images_per_step: int) -> dict | None:
        """Means of the window as floats (with throughput); None for an empty window.

        Raises:
          NonFiniteLossError: a step in the window was not finite (naming the first).
        """
        if not self.steps:
            return None
        fetched = distributed.first_replica(self.metrics)
        elapsed = time.perf_counter() - self.start
        for step, metrics in zip(self.steps, fetched, strict=True):
            if self.stop_on_nonfinite and not metrics["finite"]:
                raise NonFiniteLossError(step, float(metrics["loss"]))
        # Skipped steps changed nothing: the means are over the others (NaN if none).
        kept = [m for m in fetched if m["finite"]]
        means = {k: float(np.mean([m[k] for m in kept])) if kept else math.nan for k in fetched[0]}
        means["skipped_steps"] = float(len(fetched) - sum(m["finite"] for m in fetched))
        means.pop("finite")
        means["images_per_second"] = images_per_step * len(fetched) / max(elapsed, 1e-9)
        self.steps, self.metrics = [], []
        return means


class EpochMeans:
    """An epoch's loss terms (the means of its logged windows, weighted by their finite
    steps: a skipped step has no loss) and its images/s (images over time), for its line."""

    def __init__(self):
        self.sums, self.finite_steps, self.images, self.seconds = {}, 0, 0, 0.0

    def add(self, means: dict, steps: int, batch_size: int) -> None:
        images = batch_size * steps
        self.images += images
        self.seconds += images / max(means["images_per_second"], 1e-9)
        finite = steps - int(means["skipped_steps"])
        if finite:
            for name in LOSS_TERMS:
                self.sums[name] = self.sums.get(name, 0.0) + means[name] * finite
            self.finite_steps += finite

    def line(self, label: str) -> str:
        """``epoch 3/10: loss 2.310 (coord ..., object ..., noobj ..., class ...), 172
        images/s``; then starts the next epoch's. (:class:`TrainingProgress` adds the
        epoch's training time, ``, 24 s``, and the run's time to go, ``; about 3 min 10 s to
        go``.)"""
        speed = f"{self.images / max(self.seconds, 1e-9):.0f} images/s"
        if self.finite_steps:
            mean = {name: total / self.finite_steps for name, total in self.sums.items()}
            terms = ", ".join(f"{name} {mean[name]:.3f}" for name in LOSS_TERMS[1:])
            line = f"{label}: loss {mean['loss']:.3f} ({terms}), {speed}"
        else:
            line = f"{label}: every step skipped (a loss that was not finite), {speed}"
        self.__init__()
        return line


def duration(seconds: float) -> str:
    """``'42 s'``, ``'3 min 05 s'``, ``'2 h 07 min'``: a wall time, to the unit that matters."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def tell(message: str, *, printed: bool) -> None:
    """What the user is to know in a quiet run too: printed (above the progress bar) where
    the run prints its progress, else shown as a :class:`yolojax.errors.Notice` warning."""
    if printed:
        tqdm.write(message)
    else:
        errors.notice(message)


@contextlib.contextmanager
def warnings_above_progress_bars():
    """Prints Python warnings with ``tqdm.write``, on a line of their own above the progress
    bar (printed plainly, they would continue the bar's line)."""
    show = warnings.showwarning

    def above(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line)
        tqdm.write(text.rstrip("\n"), file=file or sys.stderr)

    warnings.showwarning = above
    try:
        yield
    finally:
        warnings.showwarning = show


class TrainingProgress:
    """The progress bar, the means of the logged metrics (over the steps since the last log,
    and over each epoch), and a line per epoch, for logs without the bar.

    Args:
      config: the run's config.
      plan: the run's steps.
      start_step: the step the run resumes from (0 for a new run).
      shows: whether it prints (process 0 alone, of a verbose run).
    """

    def __init__(self, config, plan, start_step: int, *, shows: bool):
        self.plan, self.start_step, self.shows = plan, start_step, shows
        # An epoch's clock starts at its first step's dispatch, after the compilation and
        # after the evaluation before it: (step, time), None until then. The time to go is
        # paced from the first epoch line on (evaluations included), or by that epoch alone.
        self.epoch_started, self.paced_from = None, None
        self.batch_size = config.train.batch_size
        self.window = MetricWindow(stop_on_nonfinite=not config.train.skip_nonfinite)
        self.epoch_means = EpochMeans()
        self.bar = tqdm(
            total=plan.total_steps,
            initial=start_step,
            desc=plan.epoch_label(start_step + 1),
            # On a terminal only (None): in a log file its redraws are noise, which the lines
            # per epoch and per evaluation replace, and other lines would land inside it.
            disable=None if shows else True,
            unit="step",
            dynamic_ncols=True,
            # The rate over the whole run: steps are dispatched ahead of the device and the
            # loop waits at each log step, so a recent-steps rate swings between both extremes.
            smoothing=0,
        )

    def add(self, step: int, metrics) -> None:
        """Counts ``step`` done; its ``metrics`` (on the devices) wait for the next log."""
        if self.epoch_started is None:
            self.epoch_started = (step, time.perf_counter())
        self.window.add(step, metrics)
        self.bar.update(1)

    def flush(self) -> dict:
        """The means of the steps since the last flush (see :meth:`MetricWindow.flush`),
        added to the epoch's and shown on the bar."""
        steps_in_window = len(self.window.steps)
        means = self.window.flush(self.batch_size)
        self.epoch_means.add(means, steps_in_window, self.batch_size)
        self.bar.set_postfix(loss=f"{means['loss']:.3f}", img_s=f"{means['images_per_second']:.1f}")
        return means

    def end_epoch(self, step: int) -> None:
        """Writes the line of the epoch that ``step`` ends, and names the next on the bar."""
        label = self.plan.epoch_label(step)
        if step - self.start_step <= (step - 1) % self.plan.steps_per_epoch:  # resumed in it
            label += f" (steps {self.start_step + 1}-{step}, resumed)"
        now = time.perf_counter()
        first_step, started = self.epoch_started or (step, now)
        timing = f", {duration(now - started)}"
        since_step, since = self.paced_from or (first_step, started)
        if step < self.plan.total_steps and step > since_step:
            pace = (now - since) / (step - since_step)
            timing += f"; about {duration(pace * (self.plan.total_steps - step))} to go"
        self.epoch_started = None
        self.paced_from = self.paced_from or (step, now)
        if self.shows:
            tqdm.write(self.epoch_means.line(label) + timing)
        self.bar.set_description(self.plan.epoch_label(step + 1), refresh=False)

    def close(self) -> None:
        """Closes the progress bar."""
        self.bar.close()
