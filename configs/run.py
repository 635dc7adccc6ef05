"""The config a training run saved (its ``config.json``), as a config file to start from.

``--config configs/run.py:WORKDIR`` is the run's own config, the command-line overrides it
was trained with included, and takes further overrides as any config file does. With W
the run's folder, to train a finished run further, then evaluate it with other settings:

    python train.py --config configs/run.py:W --workdir W --config.train.num_epochs=20
    python evaluate.py --workdir W --config configs/run.py:W --config.eval.score_threshold=0.05

(``evaluate.py`` without ``--config`` uses the saved config as it is.)
"""

from yolojax.config import load_run_config


def get_config(workdir=None):
    if not workdir:
        raise ValueError(
            "configs/run.py needs the run's folder after a colon: --config configs/run.py:runs/NAME"
        )
    return load_run_config(
        workdir, otherwise="use the --config file the run was trained with, configs/*.py"
    )
