"""Trains a YOLOv1 model: flags only, the job is `yolojax.trainer.train_and_evaluate`.

    python train.py --config configs/shapes.py --workdir runs/shapes
    python train.py --config configs/voc.py:vgg16 --workdir runs/vgg16 --config.train.batch_size=32
    python train.py --config configs/shapes.py --print_config   # every field, to override

Re-running the same command resumes from the latest checkpoint in --workdir.
"""

from absl import flags
from ml_collections import config_flags

from yolojax import cli

if __name__ == "__main__":
    cli.launch()  # first, before JAX is imported: the huge-pages restart, and Ctrl-C exits

from yolojax import distributed  # it imports JAX

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/voc.py or configs/voc.py:vgg16.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and plots.")
flags.DEFINE_bool(
    "print_config",
    False,
    "Print the config, overrides applied: every field a --config.<field>=VALUE can set. "
    "Then check it and exit, without training.",
)
flags.mark_flags_as_required(["config"])
distributed.define_flags()
flags.adopt_module_key_flags(distributed)  # --help lists the multi-host flags too


def main(argv):
    cli.start(argv)
    if FLAGS.print_config:
        print(cli.config_text(FLAGS.config), end="")
        with cli.command_errors(traceback=FLAGS.verbosity >= 1):
            from yolojax import checkpoints, pretrained
            from yolojax.config import validate_config

            validate_config(FLAGS.config)  # what training would refuse, said now
            # And the weights a run starts from, which a resumed run does not read.
            if not (FLAGS.workdir and checkpoints.has_saved_step(FLAGS.workdir)):
                pretrained.check_start(FLAGS.config)
        return
    if FLAGS.workdir is None:
        cli.usage_error("--workdir is required: the folder for the run's checkpoints.")
    # A documented error prints its message alone (the traceback with --verbosity=1).
    with cli.command_errors(traceback=FLAGS.verbosity >= 1):
        cli.import_tensorflow()  # here, not above: --help comes before TensorFlow loads
        from yolojax import trainer

        distributed.initialize_from_flags()
        cli.work_starts()
        # Trained and saved: a signal from then on must not make the exit status a preemption's.
        trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, on_finished=cli.ignore_stop_signals)


if __name__ == "__main__":
    cli.run(main)
