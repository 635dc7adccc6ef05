"""When the training loop logs, saves, evaluates, ends an epoch and stops: ``StepPlan``.

    plan = StepPlan(config, steps_per_epoch=100, total_steps=1000)
    plan.after(500, stop_requested=False)  # Due(log=True, epoch_line=True, save=True, ...)

Steps are counted from 1; the last epoch may be partial.
"""

from typing import NamedTuple


class Due(NamedTuple):
    """What the loop does after a step, in this order."""

    log: bool  # fetch the metrics since the last log and log their means
    epoch_line: bool  # write the line of the epoch the step ends (or the run's last)
    save: bool
    evaluate: bool
    stop: bool  # save and stop (a signal was received)
    last: bool  # the run's last step


class StepPlan:
    """When the loop logs, saves, evaluates and ends an epoch; steps are counted from 1.

    Args:
      config: the run's config.
      steps_per_epoch, total_steps: as :func:`yolojax.train_lib.steps_for` gives them.
    """

    def __init__(self, config, steps_per_epoch: int, total_steps: int):
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.num_epochs = -(-total_steps // steps_per_epoch)  # the last may be partial
        self.eval_every = round(config.eval.every_epochs * steps_per_epoch)
        self.checkpoint_every = config.train.checkpoint_every_steps
        self.log_every = config.train.log_every_steps

    def due_for_evaluation(self, step: int) -> bool:
        """Whether ``step`` is evaluated (every ``eval_every`` steps, and the last; a step past
        the last, which a run given fewer epochs than it trained resumes at, as the last)."""
        return step >= self.total_steps or (self.eval_every > 0 and step % self.eval_every == 0)

    def epoch_label(self, step: int) -> str:
        """``epoch 3/10``: the epoch that ``step`` belongs to. A partial last epoch (a
        fractional ``train.num_epochs``) says how much of it the run trains: ``epoch 1/1, 40
        of its 100 steps`` for 0.4, whose line would otherwise read as a whole epoch's."""
        epoch = min((step - 1) // self.steps_per_epoch + 1, self.num_epochs)
        label = f"epoch {epoch}/{self.num_epochs}"
        steps_in_it = self.total_steps - (epoch - 1) * self.steps_per_epoch
        if steps_in_it < self.steps_per_epoch:
            label += f", {steps_in_it} of its {self.steps_per_epoch} steps"
        return label

    def after(self, step: int, *, stop_requested: bool) -> Due:
        """What the loop does after ``step``; ``stop_requested``: a signal asks to stop."""
        last = step == self.total_steps
        epoch_ends = step % self.steps_per_epoch == 0
        evaluate = self.due_for_evaluation(step)
        save = evaluate or step % self.checkpoint_every == 0
        # Before the evaluation: a preempted job should not spend its grace period
        # evaluating (the resumed run evaluates this step first, the last step's too).
        stop = stop_requested
        return Due(
            # Fetching the window checks every step's loss before anything is saved, so a
            # non-finite state never reaches a checkpoint.
            log=last or save or stop or epoch_ends or step % self.log_every == 0,
            epoch_line=epoch_ends or last,
            save=save or stop,
            evaluate=evaluate and not stop,
            stop=stop,
            last=last,
        )
