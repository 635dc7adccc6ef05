"""The README's library examples run as printed (those that need no trained run)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_library_examples_run_and_the_training_step_learns():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    runnable = [block for block in blocks if "from_workdir" not in block]  # needs a run
    assert len(runnable) == 2
    namespace = {}
    for block in runnable:  # in order: the training step continues the first example
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["outputs"].shape == (2, 7, 7, 5 + 5 * 2)
    assert namespace["detections"].boxes.shape[0] == 2
    losses = namespace["losses"]
    assert len(losses) == 5 and losses[-1] < losses[0] / 4
