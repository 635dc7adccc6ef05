"""A Ctrl-C or SIGTERM while a command starts ends it at once (`cli.launch`), whatever it is
running; during its work it is a KeyboardInterrupt (`cli.work_starts`; SIGTERM's is
`errors.Terminated`), never dropped.

Each case runs in a process of its own: the handler is process-wide. The restart is turned
off (YOLOJAX_HUGE_PAGES=0) so that the process is the one the test started.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
            os.kill(os.getpid(), getattr(signal, sys.argv[2]))

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


def _run(
    case: str, source: str = _CTRL_C_IN_GC_CALLBACK, signal_name: str = "SIGINT"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", source, case, signal_name],
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


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_dropped_in_a_callback_during_the_work_is_sent_again(signal_name):
    # After work_starts a Ctrl-C raises KeyboardInterrupt, which Python drops where it lands
    # in JAX's garbage-collection callback: evaluate.py went on evaluating. SIGTERM's
    # errors.Terminated is one.
    done = _run("working", signal_name=signal_name)
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


# SIGTERM (a scheduler's, kill) to a command with a clean-up to do, as TFDS has while it
# prepares a dataset (it deletes its unfinished folder).
_SIGTERM_WITH_A_CLEAN_UP = textwrap.dedent(
    """
    import os, signal, sys, time
    from yolojax import cli

    if sys.argv[1] == "ignored":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a parent that ignores it leaves it
    cli.launch()
    if sys.argv[1] != "launched":
        cli.work_starts()
    with cli.command_errors():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2)
        finally:
            print("cleaned up")
    print("ran on")
    """
)


def test_a_sigterm_while_a_command_starts_exits_143_and_says_so():
    # Before, the process died silently, with the status -15.
    done = _run("launched", _SIGTERM_WITH_A_CLEAN_UP)
    assert done.returncode == 143, done.stdout + done.stderr
    assert done.stderr == "Stopped on SIGTERM.\n" and done.stdout == ""


def test_a_sigterm_during_the_work_cleans_up_then_exits_143():
    # Killed outright, TFDS left its unfinished dataset folder behind (incomplete.*).
    done = _run("working", _SIGTERM_WITH_A_CLEAN_UP)
    assert done.returncode == 143, done.stdout + done.stderr
    assert done.stdout == "cleaned up\n" and done.stderr == "Stopped on SIGTERM.\n"


def test_a_command_started_with_sigterm_ignored_keeps_ignoring_it():
    done = _run("ignored", _SIGTERM_WITH_A_CLEAN_UP)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "cleaned up\nran on\n"


# What TensorFlow 2.21's native libraries print on stderr as `import tensorflow` loads
# them, whatever TF_CPP_MIN_LOG_LEVEL (each line twice).
_ABSL_WARNING = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)
_ONEDNN_NOTICE = (
    "I0000 00:00:1796613831.006246   10045 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors "
    "from different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`."
)
# `cli.import_tensorflow()` between two other writes to stderr, with the folder `sys.argv[1]`
# first on the module path and TF_CPP_MIN_LOG_LEVEL `sys.argv[2]`.
_IMPORTS_TENSORFLOW = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = sys.argv[2]
    from yolojax import cli

    cli.launch()
    os.write(2, b"before\\n")
    cli.import_tensorflow()
    os.write(2, b"after\\n")
    print("imported", sys.modules["tensorflow"].__name__)
    """
)


def _fake_tensorflow(folder: Path, source: str) -> str:
    (folder / "tensorflow.py").write_text(textwrap.dedent(source))
    return str(folder)


def test_tensorflows_import_notices_are_dropped_and_the_rest_of_stderr_kept_in_order(tmp_path):
    # Before, train.py, evaluate.py and predict began with those four lines.
    fake = f"""
        import os, sys
        for line in ({_ABSL_WARNING!r}, {_ONEDNN_NOTICE!r}, "a native warning"):
            os.write(2, line.encode() + b"\\n")
        print("a Python warning", file=sys.stderr)
        os.write(2, ({_ABSL_WARNING!r} + "\\n" + {_ONEDNN_NOTICE!r} + "\\n").encode())
        """
    done = _run(_fake_tensorflow(tmp_path, fake), _IMPORTS_TENSORFLOW, "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported tensorflow\n"
    assert done.stderr == "before\na native warning\na Python warning\nafter\n"


@pytest.mark.parametrize("level", ["1", "0"])  # 0: TensorFlow's INFO lines asked for
def test_tensorflow_itself_imports_without_its_notices_unless_asked(tmp_path, level):
    done = _run(str(tmp_path), _IMPORTS_TENSORFLOW, level)  # the real one: none in tmp_path
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert (lines[0], lines[-1]) == ("before", "after"), done.stderr
    told = [line for line in lines if line == _ABSL_WARNING or "] oneDNN custom op" in line]
    assert len(told) == (0 if level == "1" else 4), done.stderr


def test_tensorflow_imports_in_a_process_without_stderr(tmp_path):
    # A daemon or service may run with file descriptor 2 closed: there is nothing to hold,
    # and the import (also the Python API's first use of yolojax.data) must still work.
    script = textwrap.dedent(
        """
        import os, sys
        sys.path.insert(0, sys.argv[1])
        from yolojax import cli

        os.close(2)
        cli.import_tensorflow()
        print("imported", sys.modules["tensorflow"].__name__)
        """
    )
    done = _run(_fake_tensorflow(tmp_path, "print('a fake tensorflow')"), script)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a fake tensorflow\nimported tensorflow\n"


def test_a_ctrl_c_while_tensorflow_is_imported_still_says_so(tmp_path):
    fake = """
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
        """
    done = _run(_fake_tensorflow(tmp_path, fake), _IMPORTS_TENSORFLOW, "1")
    assert done.returncode == 130, done.stdout + done.stderr
    assert done.stderr == "before\nInterrupted.\n"


# A command printing `sys.argv[2]` lines, then ending with the status `sys.argv[3]`.
_PRINTS_LINES = textwrap.dedent(
    """
    import sys
    from yolojax import cli

    def main(argv):
        for line in range(int(argv[2])):
            print(line)
        raise SystemExit(int(argv[3]))

    cli.run(main)
    """
)


@pytest.mark.parametrize(
    "lines, status, expected",
    [
        (3, 0, 141),  # written at exit, as the interpreter flushes stdout
        (100_000, 0, 141),  # written while the command prints
        (3, 1, 1),  # a command that failed keeps its status
    ],
)
def test_a_command_whose_reader_stops_reading_ends_quietly_as_piped_tools_do(
    lines, status, expected
):
    # `python -m yolojax.models ... | head -3`: the reader is gone before the command's
    # next write. It ended in a BrokenPipeError traceback (status 1, or 120 at exit).
    process = subprocess.Popen(
        [sys.executable, "-c", _PRINTS_LINES, "launched", str(lines), str(status)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # stdout buffered, as Python has it for a pipe: the lines wait for the next flush.
        env={**os.environ, "YOLOJAX_HUGE_PAGES": "0", "PYTHONUNBUFFERED": ""},
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == expected, stderr
    assert stderr == ""


@pytest.mark.parametrize(
    "command, unbuffered",
    [
        # argparse's commands: Python's "Exception ignored in: <_io.TextIOWrapper
        # name='<stdout>' ...> BrokenPipeError" as it flushed stdout at exit, status 120.
        (["-m", "yolojax.pretrained", "--help"], ""),
        (["-m", "benchmarks.evaluator", "--help"], ""),  # every benchmark, as it goes
        # absl's, with python -u or PYTHONUNBUFFERED (containers often set it): "FATAL Flags
        # parsing error: cannot load the --config file: [Errno 32] Broken pipe", status 1.
        (["-m", "yolojax.models", "--help"], "1"),
    ],
)
def test_the_commands_piped_into_a_reader_that_stops_reading_end_quietly(command, unbuffered):
    # `python -m yolojax.pretrained --help | head -3`, once head has gone.
    repo = Path(__file__).resolve().parents[1]
    env = {"YOLOJAX_HUGE_PAGES": "0", "PYTHONPATH": str(repo), "PYTHONUNBUFFERED": unbuffered}
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert (process.wait(timeout=120), stderr) == (141, "")


# A command whose own stdout is fine, writing into a pipe to a child that has ended.
_WRITES_TO_AN_ENDED_CHILD = textwrap.dedent(
    """
    import subprocess
    from yolojax import cli

    def main(argv):
        print("working", flush=True)
        child = subprocess.Popen(["true"], stdin=subprocess.PIPE)
        child.wait()
        child.stdin.write(b"x" * 1_000_000)
        child.stdin.flush()

    cli.run(main)
    """
)


def test_a_broken_pipe_of_anything_but_stdout_is_an_error_not_a_quiet_end():
    done = subprocess.run(
        [sys.executable, "-c", _WRITES_TO_AN_ENDED_CHILD],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "YOLOJAX_HUGE_PAGES": "0"},
    )
    assert done.stdout == "working\n"
    assert done.returncode == 1 and "BrokenPipeError" in done.stderr


# `python -m yolojax.predict ...`, with an atexit handler that says whether the interpreter's
# shutdown ran.
_PREDICT_WITH_AN_ATEXIT_HANDLER = textwrap.dedent(
    """
    import atexit, runpy, sys

    atexit.register(print, "shut down", flush=True)
    sys.argv = ["yolojax.predict", *sys.argv[1:]]
    runpy.run_module("yolojax.predict", run_name="__main__", alter_sys=True)
    """
)


def test_a_failed_predict_exits_at_once_without_the_interpreters_shutdown(tmp_path):
    # A SIGTERM while its model compiled: the shutdown freed the devices under the compile
    # still running in JAX's threads, a segmentation fault (status -11) 4 times in 6.
    arguments = ["--workdir", str(tmp_path / "no_run"), str(tmp_path / "photo.jpg")]
    done = subprocess.run(
        [sys.executable, "-c", _PREDICT_WITH_AN_ATEXIT_HANDLER, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "YOLOJAX_HUGE_PAGES": "0"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Error: " in done.stderr and "shut down" not in done.stdout, done.stdout + done.stderr
