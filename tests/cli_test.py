"""A Ctrl-C while a command starts ends it at once (`cli.launch`), whatever it is running;
during its work it is a KeyboardInterrupt (`cli.work_starts`), never dropped.

Each case runs in a process of its own: the handler is process-wide. The restart is turned
off (YOLOJAX_HUGE_PAGES=0) so that the process is the one the test started.
"""

import os
import subprocess
import sys
import textwrap

# Sends the process a Ctrl-C from inside a garbage-collection callback, as JAX runs one
# while a command imports it; Python only prints an exception raised there.
_CTRL_C_IN_GC_CALLBACK = textwrap.dedent(
    """
    import gc, os, signal, sys, time
    from yolojax import cli

    if sys.argv[1] != "no launch":
        cli.launch()
    if sys.argv[1] == "working":
        cli.work_starts()

    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            os.kill(os.getpid(), signal.SIGINT)

    gc.callbacks.append(callback)
    try:
        gc.collect()
        if sys.argv[1] == "working":
            time.sleep(60)  # where a Ctrl-C sent again lands
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    print("ran on")
    """
)


def _run(case: str, source: str = _CTRL_C_IN_GC_CALLBACK) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", source, case],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "YOLOJAX_HUGE_PAGES": "0"},
    )


def test_a_ctrl_c_while_a_command_starts_exits_at_once_though_a_callback_runs():
    done = _run("launched")
    assert done.returncode == 130, done.stdout + done.stderr
    assert done.stderr == "Interrupted.\n"
    assert "ran on" not in done.stdout


def test_without_launch_such_a_ctrl_c_is_lost():
    # What launch() is for: Python's KeyboardInterrupt, raised in the callback, is printed
    # and dropped, and the command runs on (train.py trained, evaluate.py evaluated).
    done = _run("no launch")
    assert done.returncode == 0
    assert "ran on" in done.stdout and "KeyboardInterrupt" in done.stderr


def test_once_the_work_starts_a_ctrl_c_is_a_keyboard_interrupt():
    # The work (training, writing drawings) stops as it must; KeyboardInterrupt can be
    # caught where it is raised, as Python's own handler raises it.
    source = _CTRL_C_IN_GC_CALLBACK.replace("gc.collect()", "os.kill(os.getpid(), signal.SIGINT)")
    source = source.replace("gc.callbacks.append(callback)", "")  # sent directly
    done = _run("working", source)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "KeyboardInterrupt\nran on\n"


def test_a_ctrl_c_dropped_in_a_callback_during_the_work_is_sent_again():
    # After work_starts a Ctrl-C raises KeyboardInterrupt, which Python drops where it lands
    # in JAX's garbage-collection callback: evaluate.py went on evaluating.
    done = _run("working")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "KeyboardInterrupt\nran on\n"
    assert "Exception ignored" not in done.stderr


_CTRL_C_IN_DEL_WITH_A_SLOW_HOOK = textwrap.dedent(
    """
    import os, signal, sys, time
    from yolojax import cli

    cli.launch()
    cli.work_starts()
    around = sys.unraisablehook

    def slow_hook(unraisable):  # as another hook around the command's (orbax's noise filter)
        around(unraisable)
        start = time.monotonic()
        while time.monotonic() - start < 0.2:
            pass

    sys.unraisablehook = slow_hook

    class Dropping:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)

    try:
        Dropping()
        time.sleep(60)  # where a Ctrl-C sent again lands
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    print("ran on")
    """
)


def test_a_ctrl_c_sent_again_while_a_slow_hook_runs_is_sent_until_it_lands():
    # Sent once after 10 ms, it landed in the hook that still ran, and was dropped there too.
    done = _run("working", _CTRL_C_IN_DEL_WITH_A_SLOW_HOOK)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "KeyboardInterrupt\nran on\n"


def test_a_command_started_with_ctrl_c_ignored_keeps_ignoring_it():
    # A background job of a script: launch() does not turn Ctrl-C back on.
    ignored = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    done = _run("launched", ignored + _CTRL_C_IN_GC_CALLBACK)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran on\n" and done.stderr == ""
