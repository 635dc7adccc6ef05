"""PNG plots: a run's curves from ``workdir/metrics.jsonl`` (like the seed report's Figures 4
and 5: loss terms and train/test mAP against epochs), and an evaluation's precision-recall
curves."""

import io
import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from yolojax import workdir as workdir_io
from yolojax.atomic_files import atomic_write_bytes
from yolojax.average_precision import precision_envelope
from yolojax.losses import LOSS_TERMS


def _series(records, key):
    points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(workdir, *, eval_split: str = "test") -> list[Path]:
    """Writes ``loss.png`` and ``mAP.png`` into ``workdir``; returns the paths written.

    ``eval_split`` names the split whose metrics metrics.jsonl logs as ``test_mAP``,
    ``test_loss``, ... (a VOC folder's is 'validation'), for the legend. Each loss term
    evaluated on it is drawn dashed, in its training curve's colour.
    """
    workdir = Path(workdir)
    records = workdir_io.read_metrics(workdir)
    loss_curves = []
    for i, term in enumerate(LOSS_TERMS):
        loss_curves.append((term, f"train {term}", {"color": f"C{i}"}))
        loss_curves.append((f"test_{term}", f"{eval_split} {term}", {"color": f"C{i}", "ls": "--"}))
    map_curves = [
        ("test_mAP", f"{eval_split} mAP (VOC07)", {}),
        ("train_mAP", "train mAP (VOC07)", {}),
    ]
    written = []
    loss_file, map_file = workdir_io.CURVE_FILES
    for filename, curves, ylabel, yscale, bottom in (
        # Log scale: the first steps' loss is ten times the rest, which would flatten them.
        (loss_file, loss_curves, "loss per image", "log", None),
        (map_file, map_curves, "mAP@0.5", "linear", 0),  # not -0.04 for all-zero mAPs
    ):
        # A Figure without pyplot: nothing global (backend, open figures) changes for the
        # caller, who may be plotting in a notebook.
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.subplots()
        for key, label, style in curves:
            epochs, values = _series(records, key)
            if values:
                marker = "." if len(values) < 30 else None
                ax.plot(epochs, values, label=label, marker=marker, **style)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_yscale(yscale)
        ax.set_ylim(bottom=bottom)  # None: matplotlib's own
        ax.grid(alpha=0.3)
        if ax.lines:  # up to ten loss curves: in two columns, to hide less of them
            ax.legend(fontsize="small", ncol=2 if len(ax.lines) > 4 else 1)
        fig.tight_layout()
        atomic_write_bytes(workdir / filename, _png(fig))  # never half a PNG
        written.append(workdir / filename)
    return written


def precision_recall_figure(results: dict, class_names, *, step: int | None = None):
    """A matplotlib Figure (not registered with pyplot) of each class's precision envelope
    against recall.

    The curve is the one whose area is the class's area AP
    (:func:`yolojax.average_precision.precision_envelope`), drawn as steps; classes without
    positives are left out.

    Args:
      results: :func:`yolojax.eval_lib.evaluate`'s results ('precision', 'recall',
        'AP_area', 'mAP', 'mAP_area').
      class_names: the C class names, for the legend.
      step: the checkpoint's step, for the title.
    """
    fig = Figure(figsize=(7, 5), dpi=100)
    ax = fig.subplots()
    if len(class_names) > 10:  # the default cycle has 10 colours; VOC has 20 classes
        ax.set_prop_cycle(color=matplotlib.colormaps["tab20"].colors)
    for name, recall, precision, ap in zip(
        class_names, results["recall"], results["precision"], results["AP_area"], strict=True
    ):
        if not math.isnan(ap):
            ax.step(*precision_envelope(recall, precision), where="pre", label=f"{name} {ap:.3f}")
    title = f"mAP@0.5 {results['mAP']:.3f} (VOC07), area {results['mAP_area']:.3f}"
    ax.set_title(f"step {step}: {title}" if step is not None else title)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if ax.lines:
        # Beside the axes: with VOC's 20 classes a legend inside would hide the curves.
        ax.legend(title="class, area AP", fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def _png(fig: Figure) -> bytes:
    """``fig`` encoded as a PNG file."""
    encoded = io.BytesIO()
    fig.savefig(encoded, format="png")
    return encoded.getvalue()


def precision_recall_png(results: dict, class_names, *, step: int | None = None) -> bytes:
    """:func:`precision_recall_figure` encoded as a PNG file."""
    return _png(precision_recall_figure(results, class_names, step=step))
