"""The subprocess side of tests/distributed_test.py (pytest does not collect it).

The device count is fixed when JAX starts, so each configuration runs in a fresh process that
the test starts with ``JAX_PLATFORMS=cpu`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=N``::

    python tests/distributed_worker.py step --out DIR
    python tests/distributed_worker.py train --data_dir D --workdir W --out DIR [--evaluate]
        [--coordinator_address 127.0.0.1:PORT --num_processes 2 --process_id I]
        [--num_epochs E --checkpoint_every_steps K] [--hold_initialization SECONDS]

``step`` saves ``DIR/step.npz``: the state before and after one train step from the same
state on the same global batch, on one device and on every local device. ``train`` runs
train.py's job (``trainer.train_and_evaluate``), with ``--evaluate`` then evaluate.py's
(``evaluate_checkpoint``), as one process of a multi-process job when the coordinator flags
are given. It saves what they returned as ``DIR/process<I>.json`` and (process 0) the state
before training as ``DIR/initial.npz``. Training stopped by a signal saves the step it stopped
at as ``{"stopped_at": step}`` instead, and exits with train.py's status for it.
With ``--evaluate`` it also records the evaluation of a model with known outputs
(:func:`evaluate_known_outputs`). ``--hold_initialization`` makes the trainer's model
initialization print ``Initializing.`` and take that many seconds longer: the time in which
a test sends a preemption notice.
"""

import argparse
import faulthandler
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

import jax
import numpy as np
from flax import traverse_util

from tests import tiny
from yolojax import distributed, eval_lib, preemption, train_lib, trainer
from yolojax.data import pipeline

GLOBAL_BATCH = 8
NUM_TRAIN = 2 * GLOBAL_BATCH  # one epoch = 2 steps
NUM_TEST = 12
# What the test compares of each evaluation.
RESULT_KEYS = ("mAP", "mAP_area", "AP", "AP_area", "num_positives", "num_images")
RESULT_KEYS += ("num_detections", "loss", "step")


def tiny_config(data_dir: str):
    """tests/tiny.py's run on 16 train / 12 test images: 2 steps, logged and saved each."""
    config = tiny.tiny_config(data_dir, num_train=NUM_TRAIN, num_test=NUM_TEST)
    config.train.batch_size = GLOBAL_BATCH
    # SGD: the update is proportional to the gradient, so rounding differences between device
    # counts stay as small as the gradients' (Adam's first step is about lr·sign(g), which
    # flips for a gradient that is zero up to rounding).
    config.train.optimizer = "sgd"
    config.train.learning_rate = 1e-3
    config.train.warmup_epochs = 0.0
    config.train.schedule = "constant"
    # Unclipped, as distributed_test.py's tolerances were measured: configs/shapes.py's
    # clip would scale these first steps' gradients down to norm 10, and with them the
    # updates compared (below its "did not train" bound in some arrays).
    config.train.grad_clip_norm = 0.0
    config.train.log_every_steps = 1
    config.train.checkpoint_every_steps = 1
    # 12 test images in batches of 8: on 2 processes each has 6, in one padded batch of 4.
    config.eval.batch_size = GLOBAL_BATCH
    # Keep every box with a positive score, up to all 4·4·2 boxes × 5 classes: the number of
    # detections is then the model's, not a cap (an untrained model's mAP is 0).
    config.eval.score_threshold = 0.0
    config.eval.max_detections = 200
    return config


def evaluate_known_outputs(config, state) -> dict:
    """Evaluates ``state`` with its output layer's bias raised: every cell proposes a box of
    1.5 cells around its centre, confidence about 0.8, class scores about 0.5. The trained
    kernel keeps the scores image-dependent, so detections that reached the evaluator with
    another image's annotations (a gather out of order) would change the mAP, which an
    untrained model's boxes (mAP 0) cannot show."""
    num_classes = config.model.num_classes
    shift = np.zeros(num_classes + 5 * config.model.num_boxes, np.float32)
    shift[:num_classes] = 0.5
    shift[num_classes : num_classes + 5] = [0.8, 0.5, 0.5, 1.5, 1.5]
    out = state.params["head"]["out"]
    head = {**state.params["head"], "out": {**out, "bias": out["bias"] + shift}}
    state = state.replace(params={**state.params, "head": head})
    model, mesh = train_lib.build_model(config), distributed.mesh()
    return eval_lib.evaluate(
        eval_lib.make_eval_step(model, config, mesh),
        distributed.replicate(state, mesh),
        pipeline.make_eval_iterator(config.data, global_batch_size=config.eval.batch_size),
        config,
    )


def _flat(state) -> dict[str, np.ndarray]:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return traverse_util.flatten_dict(jax.device_get(variables), sep="/")


def _random_batch(config, rng) -> dict[str, np.ndarray]:
    """A global batch per the data contract, without the leading device axis."""
    size, max_boxes = config.data.image_size, config.data.max_boxes
    centers = rng.uniform(0.2, 0.8, size=(GLOBAL_BATCH, max_boxes, 2))
    sizes = rng.uniform(0.1, 0.4, size=(GLOBAL_BATCH, max_boxes, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1)
    return {
        "image": rng.uniform(size=(GLOBAL_BATCH, size, size, 3)).astype(np.float32),
        "boxes": boxes.astype(np.float32),
        "labels": rng.integers(0, config.model.num_classes, (GLOBAL_BATCH, max_boxes), np.int32),
        "mask": np.arange(max_boxes) < rng.integers(1, 4, (GLOBAL_BATCH, 1)),
    }


def one_step_on_one_and_all_devices(config, out: Path) -> None:
    """Saves the state after one step on 1 device and on every local device (same batch)."""
    model, state, schedule = train_lib.initial_state(config, num_train_examples=NUM_TRAIN)
    batch = _random_batch(config, np.random.default_rng(0))
    devices = jax.local_devices()
    results = {f"initial/{k}": v for k, v in _flat(state).items()}
    for name, count in (("one", 1), ("all", len(devices))):
        # Device d gets examples [d·B/count, (d+1)·B/count), as the input pipeline splits.
        mesh = distributed.mesh(devices[:count])
        sharded = {k: v.reshape(count, -1, *v.shape[1:]) for k, v in batch.items()}
        step = train_lib.make_train_step(model, config, schedule, mesh)
        outputs = step(distributed.replicate(state, mesh), distributed.shard_batch(sharded, mesh))
        new_state, metrics = distributed.first_replica(outputs)
        results.update({f"{name}/{k}": v for k, v in _flat(new_state).items()})
        results[f"{name}/loss"] = metrics["loss"]
    results["device_count"] = np.asarray(len(devices))
    np.savez(out / "step.npz", **results)


def train_and_evaluate(config, args) -> None:
    """train.py's then (with ``--evaluate``) evaluate.py's job; saves what they returned."""
    if jax.process_index() == 0:
        _, initial, _ = train_lib.initial_state(config, num_train_examples=NUM_TRAIN)
        np.savez(args.out / "initial.npz", **_flat(initial))
    record = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
    }
    if args.hold_initialization:
        initial_state = train_lib.initial_state

        def held_initial_state(*a, **kw):
            print("Initializing.", flush=True)
            time.sleep(args.hold_initialization)
            return initial_state(*a, **kw)

        train_lib.initial_state = held_initial_state  # the trainer's call, not the one above
    try:
        trained = trainer.train_and_evaluate(config, args.workdir)
    except preemption.TrainingStopped as stop:
        record["stopped_at"] = stop.step
        (args.out / f"process{jax.process_index()}.json").write_text(json.dumps(record))
        raise SystemExit(stop.exit_status) from None
    record["trained"] = {k: trained[k] for k in RESULT_KEYS}
    if args.evaluate:
        evaluated = eval_lib.evaluate_checkpoint(
            config, args.workdir, voc_results_folder=args.out / "voc_results"
        )
        record["evaluated"] = {k: evaluated[k] for k in RESULT_KEYS}
        _, state, _ = train_lib.restore_trained_state(config, args.workdir)
        known = evaluate_known_outputs(config, state)
        record["known"] = {k: known[k] for k in RESULT_KEYS if k != "step"}
    (args.out / f"process{jax.process_index()}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("step", "train"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--workdir")
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--num_epochs", type=int, default=1)
    parser.add_argument("--checkpoint_every_steps", type=int, default=1)
    parser.add_argument("--hold_initialization", type=float, default=0.0)
    args = parser.parse_args()
    # A hang (a collective or barrier waiting for a dead peer) ends with every thread's stack.
    faulthandler.dump_traceback_later(args.timeout, exit=True)
    if args.coordinator_address:
        distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    config = tiny_config(args.data_dir)
    config.train.num_epochs = args.num_epochs
    config.train.checkpoint_every_steps = args.checkpoint_every_steps
    if args.mode == "step":
        one_step_on_one_and_all_devices(config, args.out)
    else:
        train_and_evaluate(config, args)


if __name__ == "__main__":
    main()
