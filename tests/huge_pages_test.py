"""The command-line tools restart with huge pages for malloc, where and only where they help."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from yolojax import huge_pages

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Restarts (or not), then mallocs and touches 256 MiB as XLA:CPU does its temporaries (not
# NumPy, which asks for huge pages itself) and reports how much of it the kernel backs with
# huge pages, read from the mapping's AnonHugePages in /proc/self/smaps.
_PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys
    print(json.dumps({"started": os.getpid(), "tunables": os.environ.get("GLIBC_TUNABLES")}),
          flush=True)
    from yolojax import huge_pages
    huge_pages.restart_with_huge_pages()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 256 << 20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    huge_kib = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:
                start, end = (int(address, 16) for address in fields[0].split("-"))
                mine = start <= block < end
            elif mine and fields[0] == "AnonHugePages:":
                huge_kib = int(fields[1])
    print(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "huge_kib": huge_kib,
                      "tunables": os.environ.get("GLIBC_TUNABLES")}))
    """
)

_ON_THIS_MACHINE = dict(
    glibc_version=huge_pages.glibc_version(), thp_mode=huge_pages._thp_mode(), xla_on_cpu=True
)


def _probe(tmp_path, **env_changes) -> list[dict]:
    (tmp_path / "probe.py").write_text(_PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "YOLOJAX_HUGE_PAGES")}
    env.update(JAX_PLATFORMS="cpu", **env_changes)
    result = subprocess.run(
        [sys.executable, "-u", "-m", "probe", "image.jpg", "--out=x"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def _machine_has_what_it_takes():
    if huge_pages.environment_with_huge_pages({}, **_ON_THIS_MACHINE) is None:
        pytest.skip(f"needs glibc >= 2.35 and THP 'madvise'; here: {_ON_THIS_MACHINE}")


def test_command_restarts_itself_once_with_huge_pages(tmp_path):
    _machine_has_what_it_takes()
    first, second, done = _probe(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=4")
    # The same process, started again with the user's tunable kept and the new one added,
    # with its arguments and its `-m module` form intact.
    assert first["started"] == second["started"] == done["pid"]
    assert first["tunables"] == "glibc.malloc.arena_max=4"
    assert done["tunables"] == "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1"
    assert done["argv"] == ["image.jpg", "--out=x"]
    # The kernel backs the large malloc'd block with 2 MiB pages (opted out: none, below).
    # How much of it depends on the free contiguous memory at the time: 254 of 256 MiB on
    # an idle machine, 124 MiB once under a full test run.
    assert done["huge_kib"] >= 32 << 10


def test_opt_out_keeps_glibcs_default_malloc(tmp_path):
    _machine_has_what_it_takes()
    first, done = _probe(tmp_path, YOLOJAX_HUGE_PAGES="0")  # started once: no restart
    assert first["started"] == done["pid"] and done["tunables"] is None
    assert done["huge_kib"] == 0  # in 'madvise' mode nothing asked for huge pages


def test_users_own_hugetlb_setting_wins(tmp_path):
    _machine_has_what_it_takes()
    first, done = _probe(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")  # no restart
    assert first["tunables"] == done["tunables"] == "glibc.malloc.hugetlb=0"
    assert done["huge_kib"] == 0


GOOD = dict(glibc_version=(2, 36), thp_mode="madvise", xla_on_cpu=True)


def test_failed_restart_warns_and_goes_on(monkeypatch, caplog):
    def execve(path, args, env):
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(huge_pages, "environment_with_huge_pages", lambda *a, **k: {})
    monkeypatch.setattr(huge_pages.os, "execve", execve)
    huge_pages.restart_with_huge_pages()  # returns: the command carries on
    assert "Could not restart with huge pages" in caplog.text
    assert "YOLOJAX_HUGE_PAGES=0" in caplog.text


@pytest.mark.parametrize(
    "environ, facts, why",
    [
        ({"YOLOJAX_HUGE_PAGES": "0"}, {}, "opted out"),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=2"}, {}, "the user's own setting"),
        ({}, {"glibc_version": (2, 34)}, "glibc before the tunable"),
        ({}, {"glibc_version": None}, "not glibc (musl, macOS)"),
        ({}, {"thp_mode": "always"}, "the kernel gives huge pages anyway"),
        ({}, {"thp_mode": "never"}, "the kernel gives none"),
        ({}, {"thp_mode": None}, "no transparent huge pages"),
        ({}, {"xla_on_cpu": False}, "XLA on an accelerator"),
    ],
)
def test_left_alone_where_it_would_not_help(environ, facts, why):
    assert huge_pages.environment_with_huge_pages(environ, **{**GOOD, **facts}) is None, why


def test_restart_environment_adds_only_the_tunable():
    environ = {"PATH": "/bin", "YOLOJAX_HUGE_PAGES": "1"}
    assert huge_pages.environment_with_huge_pages(environ, **GOOD) == {
        **environ,
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }


@pytest.mark.parametrize(
    "platforms, on_cpu", [("cpu", True), ("cuda,cpu", False), ("tpu", False), ("cpu,cuda", True)]
)
def test_jax_platforms_decides_whether_xla_runs_on_the_cpu(platforms, on_cpu):
    assert huge_pages._xla_on_cpu({"JAX_PLATFORMS": platforms}) is on_cpu


# Runs a command with the restart replaced by an exit of status 7, in a process of its own
# (the commands define absl flags, which are global).
_FIRST_STEP = textwrap.dedent(
    """
    import runpy, sys
    from yolojax import huge_pages

    def restart():  # first: before JAX is imported, which would then load twice
        sys.exit(7 if "jax" not in sys.modules else 8)

    huge_pages.restart_with_huge_pages = restart
    command = sys.argv[1]
    sys.argv = [command, "--help"]  # --help would end the command before any work
    if command.endswith(".py"):
        runpy.run_path(command, run_name="__main__")
    else:
        runpy.run_module(command, run_name="__main__")
    """
)


@pytest.mark.parametrize(
    "command", ["train.py", "evaluate.py", "yolojax.predict", "benchmarks.train_step"]
)
def test_each_command_restarts_first(command):
    # The restart must come first (before JAX is imported, or it would load twice, a second
    # more): a command that skipped it ran with glibc's default malloc, and only slower.
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_STEP, command],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 7, done.stdout[-1000:] + done.stderr[-2000:]
    assert "usage" not in done.stdout.lower()  # no help printed: the restart came first
