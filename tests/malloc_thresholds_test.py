"""Once the input pipeline runs, malloc keeps blocks of a few MiB in its heap again."""

import json
import subprocess
import sys
import textwrap

import pytest

from yolojax import huge_pages

# A fresh process (TensorFlow pins the threshold once per process): starts a train iterator
# on mock data, then reports for a few block sizes whether malloc serves them with mmap.
_PROBE = textwrap.dedent(
    """
    import ctypes, json, sys
    import tensorflow_datasets as tfds
    from yolojax.data import default_data_config, make_train_iterator
    from yolojax.data.testing import valid_box_data_source

    libc = ctypes.CDLL(None)
    libc.malloc.argtypes, libc.malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)

    def mmapped(size):
        block = libc.malloc(size)
        # glibc's chunk header: the size word right before the block; bit 1 is IS_MMAPPED.
        word = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value
        libc.free(block)
        return bool(word & 2)

    config = default_data_config()
    config.tfds_data_dir = sys.argv[1]
    config.image_size = 16
    with tfds.testing.mock_data(num_examples=6, as_data_source_fn=valid_box_data_source(6)):
        next(make_train_iterator(config, global_batch_size=4, seed=0))
    print(json.dumps({str(size >> 20): mmapped(size) for size in (1 << 20, 8 << 20, 64 << 20)}))
    """
)


@pytest.mark.skipif(huge_pages.glibc_version() is None, reason="glibc's malloc only")
def test_blocks_up_to_32_mib_come_from_the_heap_after_the_pipeline_starts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mmapped = json.loads(result.stdout.splitlines()[-1])
    # With TensorFlow's 128 KiB threshold left in place, 1 and 8 MiB would be mmap-ed.
    assert mmapped == {"1": False, "8": False, "64": True}
