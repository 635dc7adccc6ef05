"""Evaluates a checkpoint: per-class AP table, VOC07 11-point and area mAP, loss, images/s.

    python evaluate.py --workdir runs/shapes [--checkpoint best]
    python evaluate.py --workdir W --config configs/run.py:W --config.eval.score_threshold=0.05

Without --config it evaluates with the config the run saved (<workdir>/config.json), so the
run's command-line overrides need not be repeated; --config gives another (configs/run.py
is the saved one, open to overrides), which must describe the same model. Writes
<workdir>/eval/metrics.json and <workdir>/eval/pr_curves.png (precision-recall curves).

    python evaluate.py --workdir W --config configs/run.py:W \\
        --config.data.eval_split=voc/2012:test --voc_results results/VOC2012/Main

also writes the detections as the VOC devkit's results files, one per class, for the
evaluation server: comp4_det_test_<class>.txt for a backbone that started from ImageNet
weights (config.model.pretrained, data beyond VOC), comp3_det_test_<class>.txt for one
trained from scratch (configs/voc.py:darknet). VOC2012 test's annotations are not public,
so its mAP comes from there (docs/data.md).
"""

import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from yolojax import cli

if __name__ == "__main__":
    cli.launch()  # first, before JAX is imported: the huge-pages restart, and Ctrl-C exits

from yolojax import distributed  # it imports JAX
from yolojax.checkpoints import parse_which

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "A config file for the run's model (default: the run's own <workdir>/config.json).",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "The training run's folder.")
flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
flags.DEFINE_string(
    "voc_results",
    None,
    "A folder to also write the detections to as the VOC devkit's results files, for the VOC "
    "evaluation server: comp4_det_<test set>_<class>.txt with ImageNet weights "
    "(config.model.pretrained), comp3_... for a model trained from scratch.",
)
flags.mark_flags_as_required(["workdir"])
distributed.define_flags()
flags.adopt_module_key_flags(distributed)  # --help lists the multi-host flags too


def main(argv):
    cli.start(argv)
    # A documented error prints its message alone (the traceback with --verbosity=1).
    with cli.command_errors(traceback=FLAGS.verbosity >= 1):
        checkpoint = parse_which(FLAGS.checkpoint)  # before the slow imports
        # Here, not above: --help and a bad flag are answered before TensorFlow loads.
        cli.import_tensorflow()
        from yolojax import eval_lib
        from yolojax.config import load_run_config

        distributed.initialize_from_flags()
        config = FLAGS.config
        if config is None:
            config = load_run_config(
                FLAGS.workdir, otherwise="give the config it was trained with: --config FILE.py"
            )
        cli.work_starts()
        results = eval_lib.evaluate_checkpoint(
            config, FLAGS.workdir, checkpoint, voc_results_folder=FLAGS.voc_results
        )
    print(eval_lib.report(results, config.data))
    saved = results.get("saved")  # only where files are written: process 0 of a job
    if saved:
        *others, last = map(str, saved)
        print(f"Saved {', '.join(others)}{' and ' if others else ''}{last}.")
    if FLAGS.voc_results is not None and saved is not None and Path(FLAGS.voc_results) not in saved:
        # Asked for (a submission to the evaluation server): not a success without them.
        print("Error: the VOC results files were not written (see above).", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    cli.run(main)
