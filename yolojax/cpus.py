"""How many CPUs this process may use."""

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or ``taskset``'s share, where the
    system says), not the machine's."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
