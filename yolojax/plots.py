"""PNG plots of a run's curves from ``workdir/metrics.jsonl`` (like the seed report's
Figures 4 and 5): loss terms against epochs, and train/test mAP against epochs."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt

from yolojax import workdir as workdir_io

LOSS_TERMS = ("loss", "coord", "object", "noobj", "class")
MAP_CURVES = (("test_mAP", "test mAP (VOC07)"), ("train_mAP", "train mAP (VOC07)"))


def _series(records, key):
    points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(workdir) -> list[Path]:
    """Writes ``loss.png`` and ``mAP.png`` into ``workdir``; returns the paths written."""
    workdir = Path(workdir)
    records = workdir_io.read_metrics(workdir)
    written = []
    for filename, curves, ylabel in (
        ("loss.png", [(k, k) for k in LOSS_TERMS], "loss per image"),
        ("mAP.png", MAP_CURVES, "mAP@0.5"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key, label in curves:
            epochs, values = _series(records, key)
            if values:
                ax.plot(epochs, values, label=label, marker="." if len(values) < 30 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        fig.tight_layout()
        fig.savefig(workdir / filename)
        plt.close(fig)
        written.append(workdir / filename)
    return written
