"""The config a training run saved (its ``config.json``), as a config file to start from.

``--config configs/run.py:WORKDIR`` is the run's own config, the command-line overrides it
was trained with included, and takes further overrides as any config file does:

    python train.py --config configs/run.py:runs/shapes --workdir runs/shapes \
        --config.train.num_epochs=20            # train a finished run further
    python evaluate.py --workdir runs/shapes --config configs/run.py:runs/shapes \
        --config.eval.score_threshold=0.05      # evaluate it with other settings

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
