"""SIGTERM and a first Ctrl-C ask training to stop; a second acts at once; ignored stays ignored.

The signals are real (``signal.raise_signal`` delivers them to this thread before it returns);
each test puts recording handlers in place first, so that a signal that gets past
``StopSignals`` is seen, not fatal to pytest.
"""

import os
import signal
import threading

import pytest

from yolojax import preemption


@pytest.fixture(name="previous")
def fixture_previous():
    """Recording handlers for SIGINT and SIGTERM while the test runs; the real ones after."""
    received = []
    originals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signal_number in originals:
        signal.signal(signal_number, lambda number, frame: received.append(number))
    yield received
    for signal_number, original in originals.items():
        signal.signal(signal_number, original)


@pytest.mark.parametrize(
    "signal_number, again",
    [
        (signal.SIGINT, "Press Ctrl-C again to stop at once."),
        (signal.SIGTERM, "A second SIGTERM stops at once, without that checkpoint."),
    ],
)
def test_the_first_signal_asks_to_stop_the_second_goes_to_the_previous_handler(
    previous, capfd, signal_number, again
):
    with preemption.StopSignals() as stop:
        assert not stop.should_stop(1)
        signal.raise_signal(signal_number)
        assert previous == []  # taken by StopSignals, not passed on
        assert stop.should_stop(2) and stop.received == signal_number
        err = capfd.readouterr().err
        name = signal.Signals(signal_number).name
        assert f"{name} received: training stops after the current step" in err
        assert again in err

        signal.raise_signal(signal_number)  # the user insists: the old behaviour, at once
        assert previous == [signal_number]
    assert previous == [signal_number]
    signal.raise_signal(signal_number)  # and after the block, the handlers are the old ones
    assert previous == [signal_number, signal_number]


def test_after_a_ctrl_c_a_sigterm_still_waits_for_the_save(previous, capfd):
    with preemption.StopSignals() as stop:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # the scheduler, while the checkpoint is written
        assert previous == [] and stop.received == signal.SIGINT
        assert "SIGTERM received" in capfd.readouterr().err
        signal.raise_signal(signal.SIGTERM)
        assert previous == [signal.SIGTERM]


def test_a_multi_process_job_stops_where_jax_preemption_service_says(monkeypatch):
    # JAX's service agrees on a step across processes; here it says step 3.
    reported = []

    def reached_preemption_sync_point(step):
        reported.append(step)
        return step == 3

    monkeypatch.setattr(preemption.jax, "process_count", lambda: 2)
    monkeypatch.setattr(
        preemption.multihost_utils, "reached_preemption_sync_point", reached_preemption_sync_point
    )
    preemption.report_resumed_step(1)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with preemption.StopSignals() as stop:
        # JAX's own SIGTERM handler stays; Ctrl-C reaches one process only: left as it was.
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        assert [stop.should_stop(step) for step in (2, 3)] == [False, True]
    assert reported == [1, 2, 3] and stop.received == signal.SIGTERM


def test_the_previous_handlers_come_back_after_a_block_without_signals(previous):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with preemption.StopSignals() as stop:
        assert all(signal.getsignal(s) != h for s, h in handlers.items())
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert stop.received is None


def test_a_handler_set_inside_the_block_is_left_in_place(previous):
    # The trainer's on_finished (train.py: ignore both signals) runs before the block ends.
    with preemption.StopSignals():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    signal.raise_signal(signal.SIGINT)  # the other one has its previous handler back
    assert previous == [signal.SIGINT]


def test_a_signal_the_process_ignores_stays_ignored(previous):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a parent that ignores it leaves it
    with preemption.StopSignals() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert not stop.should_stop(1)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_an_ignored_ctrl_c_is_warned_of_and_sigterm_named(previous, recwarn):
    with preemption.StopSignals():  # both handled: nothing to say
        pass
    # A script's background job: `python train.py ... &` starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warning = rf"ignores Ctrl-C .* kill -TERM {os.getpid()}\."
    with pytest.warns(UserWarning, match=warning), preemption.StopSignals():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # both ignored: naming SIGTERM would mislead
    with preemption.StopSignals():
        pass
    assert not recwarn.list  # (pytest.warns takes the one it matched)


def test_outside_the_main_thread_nothing_changes(previous):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = {}

    def train():
        with preemption.StopSignals() as stop:
            seen["handlers"] = {s: signal.getsignal(s) for s in handlers}
            seen["should_stop"] = stop.should_stop(1)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert seen == {"handlers": handlers, "should_stop": False}


def test_once_the_run_has_finished_a_signal_says_so_and_stops_nothing(previous, capfd):
    with preemption.StopSignals() as stop:
        assert not stop.run_finished()  # no signal before: the run ends as planned
        signal.raise_signal(signal.SIGTERM)  # the scheduler, while the last files are written
        assert previous == [] and not stop.should_stop(8) and stop.received is None
        err = capfd.readouterr().err
        assert err == (
            "\nSIGTERM received: the run has finished, and exits once its files are written. "
            "A second SIGTERM stops at once.\n"
        )
        signal.raise_signal(signal.SIGTERM)
        assert previous == [signal.SIGTERM]
    with preemption.StopSignals() as stop:
        signal.raise_signal(signal.SIGINT)  # during the last evaluation: it still stops
        assert stop.run_finished() and stop.received == signal.SIGINT
    assert "training stops after the current step" in capfd.readouterr().err


def test_training_stopped_exits_as_the_signal_would_and_says_how_to_resume(tmp_path):
    stopped = preemption.TrainingStopped(signal.SIGTERM, 37, tmp_path / "checkpoints")
    assert stopped.exit_status == 143 and stopped.step == 37
    assert str(stopped) == (
        f"Stopped on SIGTERM after step 37, saved in {tmp_path / 'checkpoints'}: rerun the "
        "same command to resume from it."
    )
    assert preemption.TrainingStopped(signal.SIGINT, 1, tmp_path).exit_status == 130
    last = preemption.TrainingStopped(signal.SIGTERM, 8, tmp_path, last=True)
    assert (last.exit_status, str(last)) == (
        143,
        f"Stopped on SIGTERM after step 8, the last, saved in {tmp_path} but not evaluated: "
        "rerun the same command to evaluate it.",
    )
