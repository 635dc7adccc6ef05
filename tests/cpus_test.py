import os

from yolojax.cpus import usable_cpus


def test_the_usable_cpus_are_the_affinity_masks_where_the_system_has_one(monkeypatch):
    # A container's or taskset's share, not the machine's: predict's drawing threads and the
    # input pipeline's map calls are sized by it.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cpus() == 2


def test_the_usable_cpus_are_the_cpu_count_without_sched_getaffinity(monkeypatch):
    # macOS and Windows have no os.sched_getaffinity: the CPU count is os.cpu_count's.
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cpus() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "cannot be determined"
    assert usable_cpus() == 1
