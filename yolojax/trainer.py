"""The training loop: ``train_and_evaluate(config, workdir)``, the whole job of ``train.py``.

It restores the latest checkpoint of ``workdir`` if there is one (same step, same data
order), trains with :func:`yolojax.train_lib.train_step` compiled over every device of the
job (data parallel), evaluates VOC mAP periodically (test split, and a fixed train subset to watch
overfitting), keeps the last checkpoints and the best by test mAP, and writes metrics (JSON
lines + TensorBoard) and loss/mAP plots into ``workdir``.

In a multi-process job (``yolojax.distributed``) every process runs this same loop on its
share of each global batch, and the step's collectives span every process's devices. Every
process takes part in evaluation and checkpoint saves (orbax writes from process 0); only
process 0 writes the other workdir files and prints progress. A preemption (SIGTERM) stops
every process after the same step, saved (:mod:`yolojax.preemption`).
"""

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from yolojax import (
    checkpoints,
    distributed,
    errors,
    eval_lib,
    plots,
    preemption,
    pretrained,
    train_lib,
)
from yolojax import workdir as workdir_io
from yolojax.config import resolve_num_classes, validate_config
from yolojax.data import pipeline
from yolojax.train_lib import NonFiniteLossError


class _MetricWindow:
    """Collects per-step device metrics between two log points; fetched in one transfer.

    Args:
      stop_on_nonfinite: raise for a non-finite step (else it was skipped: count it).
    """

    def __init__(self, stop_on_nonfinite: bool):
        self.stop_on_nonfinite = stop_on_nonfinite
        self.steps, self.metrics, self.start = [], [], time.perf_counter()

    def add(self, step: int, metrics) -> None:
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
        self.steps, self.metrics, self.start = [], [], time.perf_counter()
        return means


class _EpochMeans:
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
            for name in plots.LOSS_TERMS:
                self.sums[name] = self.sums.get(name, 0.0) + means[name] * finite
            self.finite_steps += finite

    def line(self, label: str) -> str:
        """``epoch 3/10: loss 2.310 (coord ..., object ..., noobj ..., class ...), 172
        images/s``; then starts the next epoch's."""
        speed = f"{self.images / max(self.seconds, 1e-9):.0f} images/s"
        if self.finite_steps:
            mean = {name: total / self.finite_steps for name, total in self.sums.items()}
            terms = ", ".join(f"{name} {mean[name]:.3f}" for name in plots.LOSS_TERMS[1:])
            line = f"{label}: loss {mean['loss']:.3f} ({terms}), {speed}"
        else:
            line = f"{label}: every step skipped (a loss that was not finite), {speed}"
        self.__init__()
        return line


@contextlib.contextmanager
def _warnings_above_progress_bars():
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


def _prepare_workdir(config, info, workdir: Path, start_step: int, total_steps: int):
    """Writes the run's config and class names into ``workdir``, drops what a crashed run
    logged after ``start_step``, and opens its TensorBoard log (process 0's part)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_json = config.to_json_best_effort(indent=2)
    # A finished run's config.json stays the config its checkpoint was trained with (if
    # it was lost, this config is the best there is).
    if start_step < total_steps or not (workdir / workdir_io.CONFIG_FILE).exists():
        changes, kept = workdir_io.save_config(workdir, config_json, start_step)
        outcome = f"Training goes on with the new values; the previous config is kept as {kept}"
    else:
        changes = workdir_io.config_changes(workdir, config_json)
        outcome = (
            f"The run has already trained to step {start_step}, at or past the "
            f"{total_steps} steps this config asks for: no step is left to train with "
            "it, so config.json is left as it was"
        )
    if changes:
        tqdm.write(
            "The config differs from the one saved in this workdir: "
            + "; ".join(changes[:8])
            + ("; ..." if len(changes) > 8 else "")
            + f". {outcome}."
        )
    workdir_io.atomic_write_text(
        workdir / workdir_io.CLASSES_FILE, workdir_io.to_json(list(info.class_names))
    )
    workdir_io.truncate_metrics(workdir, start_step)
    return workdir_io.TensorBoardWriter(workdir, start_step)


@contextlib.contextmanager
def _workdir_write_errors(workdir: Path, start_step: int):
    """A run's first writes into its workdir that fail (a full disk, a read-only mount) as
    one error that names the workdir and says what a rerun does."""
    try:
        yield
    except OSError as error:
        rerun = f"resumes from step {start_step}" if start_step else "starts the run"
        raise errors.machine_error(
            f"write the run's files in {workdir}",
            error,
            f"free space (or choose another --workdir); the same command then {rerun}.",
        ) from error


def run_summary(
    config, info, params, *, steps_per_epoch: int, total_steps: int, eval_every: int
) -> str:
    """What a run is about to train, in one paragraph: the model and its size, the data and
    its classes (a class misspelled in one annotation shows up here as one more class), the
    devices, and the schedule of steps and evaluations."""
    model, data = config.model, config.data
    num_params = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
    source = f"{data.source} ({data.folder})" if data.source == "voc_folder" else data.source
    names = ", ".join(info.class_names[:10]) + (", ..." if len(info.class_names) > 10 else "")
    devices = jax.devices()
    evaluations = f"every {eval_every} steps and at the end" if eval_every else "at the end"
    return (
        f"Training {model.backbone} with the {model.head} head ({num_params / 1e6:.2f} M "
        f"parameters, {model.dtype}) on {source}: {info.num_train_examples} train and "
        f"{info.num_eval_examples} {info.eval_split_name} images of {len(info.class_names)} "
        f"classes ({names}) at {data.image_size}×{data.image_size}. Batch "
        f"{config.train.batch_size} over {len(devices)} {devices[0].platform.upper()} "
        f"device{'s' if len(devices) > 1 else ''}: {steps_per_epoch} steps an epoch, "
        f"{total_steps} steps in all; "
        f"evaluation on the {info.eval_split_name} split {evaluations}."
    )


def train_and_evaluate(
    config, workdir: str, *, on_finished: Callable[[], None] | None = None
) -> dict:
    """Trains and evaluates the model described by ``config`` in ``workdir``.

    Re-running with the same ``workdir`` resumes from its latest checkpoint. SIGTERM or a
    first Ctrl-C during the steps saves the step reached and stops (:mod:`yolojax.preemption`).

    Args:
      config: the run's config (``configs/*.py``'s ``get_config()``), validated here.
      workdir: the run's folder: checkpoints, metrics, curves.
      on_finished: called with no arguments once the run has finished and everything is
        saved, while the trainer still holds SIGTERM and Ctrl-C; not called on a stop or an
        error. ``train.py`` passes :func:`yolojax.cli.ignore_stop_signals`, so that a
        scheduler's SIGTERM from then on, its shutdown included, cannot end the process
        with a preemption's exit status.

    Returns:
      The last evaluation's results (see :func:`yolojax.eval_lib.evaluate`), plus ``step``.

    Raises:
      yolojax.preemption.TrainingStopped: SIGTERM or Ctrl-C stopped training; its checkpoint
        is saved.
      KeyboardInterrupt: a second Ctrl-C (or one in a multi-process job) interrupted at once.
      NonFiniteLossError: a step's loss was not finite (and ``train.skip_nonfinite`` is off).
    """
    validate_config(config)
    is_main = jax.process_index() == 0
    # Only process 0 writes: a check that failed in another process alone would leave
    # process 0 waiting at the first barrier.
    workdir_io.check_workdir(workdir, writable=is_main)
    # Before any data is prepared: a batch that does not split over the devices names the
    # numbers to change.
    distributed.check_batch_size(config.train.batch_size, "config.train.batch_size")
    # So are missing ImageNet weights, unless a checkpoint is saved: resuming restores every
    # value (an empty checkpoints/ is a run stopped before its first save).
    if not checkpoints.has_saved_step(workdir):
        pretrained.check_available(config.model)
    eval_batch = eval_lib.eval_batch_size(config)
    workdir = Path(workdir)
    info = pipeline.get_dataset_info(config.data)
    resolve_num_classes(config, info.class_names)
    if config.data.source == "voc_folder" and config.data.eval_split is None:
        # The folder's held-out split, recorded in config.json: a resume or evaluate.py keeps
        # evaluating on it whatever a later version's default.
        config.data.eval_split = info.eval_split_name
    # Before the checkpoint folders are made: a split smaller than a batch leaves nothing.
    steps_per_epoch, total_steps = train_lib.steps_for(config, info.num_train_examples)
    ckpt = checkpoints.Checkpoints(
        workdir, checkpoints.model_signature(config), keep=config.train.keep_checkpoints
    )
    # As early as the step is known: a preemption notice from here on is acted on, including
    # one during the model's initialization (long for big models), restore and compile.
    # Again after a restore that fell back to an older, undamaged checkpoint.
    latest_step = ckpt.latest_step()
    preemption.report_resumed_step(latest_step or 0)
    model, state, schedule = train_lib.initial_state(
        config, info.num_train_examples, fresh=latest_step is None
    )
    start_step = 0
    if latest_step is not None:
        state, start_step = ckpt.restore(state)
        state = state.replace(step=start_step)
        if start_step != latest_step:
            preemption.report_resumed_step(start_step)
        if is_main:
            tqdm.write(f"Resuming from the checkpoint of step {start_step} in {workdir}.")
    else:  # starting over: what an earlier run in this workdir left is kept aside, not mixed in
        ckpt.set_aside_best()
        moved = workdir_io.set_aside_logs(workdir) if is_main else []
        if moved:
            tqdm.write(
                f"No checkpoint to resume from in {workdir}: training starts over. What an "
                f"earlier run logged there is kept in {moved[0].parent}: "
                + ", ".join(path.name for path in moved)
                + "."
            )
    if is_main:
        with _workdir_write_errors(workdir, start_step):
            tensorboard = _prepare_workdir(config, info, workdir, start_step, total_steps)

    curves_drawn = True  # whether loss.png and mAP.png show every record logged so far

    def record(step: int, scalars: dict) -> None:
        nonlocal curves_drawn
        if is_main:
            workdir_io.append_metrics(
                workdir, {"step": step, "epoch": step / steps_per_epoch, **scalars}
            )
            tensorboard.write(step, scalars)
            curves_drawn = False

    def draw_curves() -> None:
        """loss.png and mAP.png of the records so far; a failure (a full disk) only warns:
        the plots are for watching, and training (or the error on its way out) goes on."""
        nonlocal curves_drawn
        if is_main and not curves_drawn:
            try:
                plots.plot_training_curves(workdir, eval_split=info.eval_split_name)
                curves_drawn = True
            except OSError as error:
                warnings.warn(
                    f"Could not draw the training curves: {error}", errors.Notice, stacklevel=2
                )

    mesh = distributed.mesh()
    train_step = train_lib.make_train_step(model, config, schedule, mesh)
    detect = eval_lib.make_eval_step(model, config, mesh)

    def evaluate_model(on_devices) -> tuple[dict, dict]:
        """(test set results, the scalars to log) for the model on the devices."""
        results = eval_lib.evaluate(
            detect,
            on_devices,
            pipeline.make_eval_iterator(config.data, global_batch_size=eval_batch),
            config,
            info.class_names,
            progress=f"Evaluating ({info.eval_split_name})",
            total=info.num_eval_examples,
        )
        scalars = {"test_mAP": results["mAP"], "test_mAP_area": results["mAP_area"]}
        if config.eval.train_subset:
            train_results = eval_lib.evaluate(
                detect,
                on_devices,
                pipeline.make_eval_iterator(
                    config.data,
                    global_batch_size=eval_batch,
                    split="train",
                    max_examples=config.eval.train_subset,
                ),
                config,
                info.class_names,
                progress="Evaluating (train subset)",
                total=min(config.eval.train_subset, info.num_train_examples),
            )
            scalars["train_mAP"] = train_results["mAP"]
        return results, scalars

    def report(step: int, results: dict, train_map: float | None) -> None:
        if not is_main:
            return
        if eval_lib.has_ground_truth(results):
            train = f"; train subset mAP {train_map:.4f}" if train_map is not None else ""
            tqdm.write(
                f"step {step}: {info.eval_split_name} mAP {results['mAP']:.4f} "
                f"(area {results['mAP_area']:.4f}){train}"
            )
        else:  # "mAP nan" said nothing of why, or of what best/ then holds
            tqdm.write(
                f"step {step}: {eval_lib.no_ground_truth(info.eval_split_name)}, and best/ "
                "keeps the first evaluated checkpoint: set config.data.eval_split to a split "
                "with annotations (for TFDS VOC 2012, 'voc/2012:validation')."
            )

    def save_if_best(step: int, on_devices, results: dict) -> None:
        ckpt.save_if_best(step, distributed.first_replica(on_devices), {"mAP": results["mAP"]})

    def run_evaluation(step: int, on_devices) -> dict:
        results, scalars = evaluate_model(on_devices)
        # best/ on disk before the log says the step was evaluated: a resumed run evaluates
        # again only the steps the log lacks, so a kill in between would have lost best/.
        save_if_best(step, on_devices, results)
        ckpt.wait()
        record(step, scalars)
        report(step, results, scalars.get("train_mAP"))
        draw_curves()  # the curves so far, to watch a long run by
        return {**results, "step": step}

    eval_every = round(config.eval.every_epochs * steps_per_epoch)
    if is_main:
        summary = run_summary(
            config,
            info,
            state.params,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            eval_every=eval_every,
        )
        tqdm.write(summary)
    on_devices = distributed.replicate(state, mesh)
    train_iter = pipeline.make_train_iterator(
        config.data,
        global_batch_size=config.train.batch_size,
        seed=config.seed,
        start_step=start_step,
    )

    def due_for_evaluation(step: int) -> bool:
        return step == total_steps or (eval_every > 0 and step % eval_every == 0)

    window = _MetricWindow(stop_on_nonfinite=not config.train.skip_nonfinite)
    epoch_means = _EpochMeans()
    results = None
    num_epochs = -(-total_steps // steps_per_epoch)  # the last may be partial

    def epoch_label(step: int) -> str:  # the epoch that ``step`` (1-based) belongs to
        return f"epoch {min((step - 1) // steps_per_epoch + 1, num_epochs)}/{num_epochs}"

    progress = tqdm(
        total=total_steps,
        initial=start_step,
        desc=epoch_label(start_step + 1),
        # On a terminal only (None): in a log file its redraws are noise, which the lines per
        # epoch and per evaluation replace, and other lines would land inside it.
        disable=None if is_main else True,
        unit="step",
        dynamic_ncols=True,
        # The rate over the whole run: steps are dispatched ahead of the device and the loop
        # waits at each log step, so a recent-steps rate swings between both extremes.
        smoothing=0,
    )

    with contextlib.ExitStack() as signals_caught:
        try:
            logged = {r["step"] for r in workdir_io.read_metrics(workdir) if "test_mAP" in r}
            if start_step and due_for_evaluation(start_step) and start_step not in logged:
                # Saved, but its evaluation was cut short (a crash, or a stop that skipped it).
                # A signal during it stops at once: nothing is left to save.
                if is_main:
                    tqdm.write(f"Evaluating step {start_step}, which was saved but not evaluated.")
                results = run_evaluation(start_step, on_devices)
            with _warnings_above_progress_bars():
                if start_step < total_steps:
                    # From the first step until the last checkpoint is written: a signal after the
                    # last step (its evaluation, the final save) lets the run finish, exit status 0.
                    stop_signals = signals_caught.enter_context(preemption.StopSignals())
                for step in range(start_step + 1, total_steps + 1):
                    batch = distributed.shard_batch(next(train_iter), mesh)
                    on_devices, metrics = train_step(on_devices, batch)
                    window.add(step, metrics)
                    progress.update(1)
                    epoch_ends = step % steps_per_epoch == 0
                    last = step == total_steps
                    evaluate_now = due_for_evaluation(step)
                    save_now = evaluate_now or step % config.train.checkpoint_every_steps == 0
                    # Before the evaluation: a preempted job should not spend its grace period
                    # evaluating (the resumed run evaluates this step first).
                    stop_now = stop_signals.should_stop(step) and not last
                    logs = step % config.train.log_every_steps == 0
                    if last or save_now or stop_now or epoch_ends or logs:
                        # Fetching the window checks every step's loss before anything is saved,
                        # so a non-finite state never reaches a checkpoint.
                        steps_in_window = len(window.steps)
                        means = window.flush(config.train.batch_size)
                        record(step, means)
                        epoch_means.add(means, steps_in_window, config.train.batch_size)
                        progress.set_postfix(
                            loss=f"{means['loss']:.3f}", img_s=f"{means['images_per_second']:.1f}"
                        )
                    if epoch_ends or last:  # a line per epoch, for logs without the bar
                        label = epoch_label(step)
                        if step - start_step <= (step - 1) % steps_per_epoch:  # resumed in it
                            label += f" (steps {start_step + 1}-{step}, resumed)"
                        if is_main:
                            tqdm.write(epoch_means.line(label))
                        progress.set_description(epoch_label(step + 1), refresh=False)
                    if save_now or stop_now:  # before the evaluation, which may be cut short
                        ckpt.save(step, distributed.first_replica(on_devices))
                    if evaluate_now and not stop_now:
                        results = run_evaluation(step, on_devices)
                        # A signal during the evaluation stops at this step, already saved.
                        stop_now = stop_signals.should_stop(step) and not last
                    if stop_now:  # the save completes in `finally`, before this reaches the caller
                        raise preemption.TrainingStopped(
                            stop_signals.received, step, workdir / checkpoints.LATEST_FOLDER
                        )
            if results is None:  # the run had finished: report its final checkpoint again
                if is_main:
                    tqdm.write(
                        f"The run has already trained to step {start_step}; evaluating that "
                        "checkpoint (its results are logged already)."
                    )
                results, scalars = evaluate_model(on_devices)
                results["step"] = start_step
                save_if_best(start_step, on_devices, results)  # one a kill may have left unsaved
                report(start_step, results, scalars.get("train_mAP"))
        except KeyboardInterrupt as interrupt:
            ckpt.wait()
            last, folder = ckpt.latest_step(), workdir / checkpoints.LATEST_FOLDER
            # The message travels with the exception (train.py prints it as its last line), and
            # the cause keeps where the interrupt came.
            raise KeyboardInterrupt(
                f"Interrupted. The last checkpoint, step {last}, is in {folder}: "
                "rerun the same command to resume from it."
                if last is not None
                else "Interrupted before the first checkpoint: rerunning starts over."
            ) from interrupt
        except NonFiniteLossError as error:
            bad_step, loss = error.args
            ckpt.wait()
            last, folder = ckpt.latest_step(), workdir / checkpoints.LATEST_FOLDER
            raise NonFiniteLossError(
                "Training stopped: "
                + (
                    f"the loss of step {bad_step} is {loss} (not finite). "
                    if not math.isfinite(loss)  # else the gradients' norm overflowed
                    else f"the gradients of step {bad_step} are not finite (its loss: {loss:.4g}). "
                )
                + (
                    f"The last good checkpoint (step {last}) in {folder} is intact. "
                    if last is not None
                    else "It came before the first checkpoint: rerunning starts over. "
                )
                + "Lower config.train.learning_rate, set config.train.grad_clip_norm (e.g. 10), "
                "or set config.train.skip_nonfinite=True to skip such steps."
            ) from None
        finally:
            progress.close()
            ckpt.wait()
            ckpt.close()
            if is_main:
                tensorboard.close()
            draw_curves()  # also for a stopped or failed run: its curves up to there
        if on_finished is not None:  # before StopSignals lets go: no moment without either
            on_finished()
    if is_main:
        saved = "Saved in" if start_step < total_steps else "Nothing left to train; the run is in"
        print(
            f"{saved} {workdir}: checkpoints/ (the last {config.train.keep_checkpoints}), best/ "
            f"(the best {info.eval_split_name} mAP), metrics.jsonl, loss.png, mAP.png, "
            f"tensorboard/. Evaluate with: python evaluate.py --workdir {workdir}"
        )
    return results
