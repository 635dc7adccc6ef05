"""The evaluation's precision-recall plot draws the curve whose area is each class's AP;
the training curves name the split they evaluate."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolojax import plots
from yolojax import workdir as workdir_io
from yolojax.evaluation import VOCEvaluator

A, B, FAR = [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]


def _results():
    """cat: TP, FP, TP over 2 positives (area AP 5/6); dog: no positives; bird: found (AP 1)."""
    evaluator = VOCEvaluator(3)
    evaluator.add(
        gt_boxes=np.array([A, B, FAR], float),
        gt_labels=np.array([0, 0, 2]),
        gt_difficult=np.zeros(3, bool),
        pred_boxes=np.array([A, FAR, B, FAR], float),
        pred_scores=np.array([0.9, 0.8, 0.7, 0.6]),
        pred_labels=np.array([0, 0, 0, 2]),
    )
    return evaluator.compute()


def test_each_class_with_positives_gets_its_envelope_as_steps(tmp_path):
    results = _results()
    assert results["AP_area"][0] == pytest.approx(5 / 6)  # the case is what the labels say
    fig = plots.precision_recall_figure(results, ["cat", "dog", "bird"], step=7)
    ax = fig.axes[0]
    cat, bird = ax.get_lines()
    assert (cat.get_label(), bird.get_label()) == ("cat 0.833", "bird 1.000")
    # Recall framed by 0 and 1; at each, the best precision at that recall or beyond.
    np.testing.assert_allclose(cat.get_xdata(), [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(cat.get_ydata(), [1, 1, 2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(bird.get_ydata(), [1, 1, 0])
    # Steps whose value holds to the left of each point: the area under them is the AP.
    assert cat.get_drawstyle() == "steps-pre"
    # VOC07: cat's precision is 1 at the 6 thresholds up to recall 0.5, 2/3 at the other 5,
    # so AP 28/33 and the mean (28/33 + 1) / 2; area: (5/6 + 1) / 2.
    assert ax.get_title() == "step 7: mAP@0.5 0.924 (VOC07), area 0.917"

    png = plots.precision_recall_png(results, ["cat", "dog", "bird"])
    assert Image.open(io.BytesIO(png)).size == (700, 500)


def test_twenty_classes_get_twenty_colours():
    evaluator = VOCEvaluator(20)
    boxes = np.array([[10 * i, 0, 10 * i + 8, 8] for i in range(20)], float)
    labels = np.arange(20)
    evaluator.add(boxes, labels, np.zeros(20, bool), boxes, np.linspace(1, 0.5, 20), labels)
    names = [f"class{i}" for i in range(20)]
    lines = plots.precision_recall_figure(evaluator.compute(), names).axes[0].get_lines()
    assert len({line.get_color() for line in lines}) == 20


def test_plotting_leaves_the_callers_matplotlib_alone(tmp_path):
    # In a fresh process, as a notebook user's would be: the backend they chose stays.
    script = f"""
import matplotlib
matplotlib.use("svg")
from yolojax import detector, plots
from yolojax.evaluation import VOCEvaluator
evaluator = VOCEvaluator(1)
png = plots.precision_recall_png(evaluator.compute(), ["cat"])
open({str(tmp_path / "pr.png")!r}, "wb").write(png)
print(matplotlib.get_backend())
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["svg"]
    assert Image.open(tmp_path / "pr.png").size == (700, 500)


@pytest.fixture(name="saved")
def fixture_saved(monkeypatch):
    """``{file name: Figure}`` of each figure saved, which is also written as usual (each
    figure is encoded, then its file written)."""
    saved, encoded = {}, []
    save, write = plots.Figure.savefig, plots.atomic_write_bytes

    def encode(self, *args, **kwargs):
        encoded.append(self)
        return save(self, *args, **kwargs)

    def write_file(path, data):
        saved[Path(path).name] = encoded[-1]
        return write(path, data)

    monkeypatch.setattr(plots.Figure, "savefig", encode)
    monkeypatch.setattr(plots, "atomic_write_bytes", write_file)
    return saved


def test_training_curves_name_the_split_and_show_the_loss_on_a_log_scale(tmp_path, saved):
    for epoch, value in ((1, 0.2), (2, 0.4)):
        record = {"step": epoch, "epoch": epoch, "loss": 1 / epoch, "test_mAP": value}
        workdir_io.append_metrics(tmp_path, record | {"test_loss": 3 / epoch})
    plots.plot_training_curves(tmp_path, eval_split="validation")
    (curve,) = saved["mAP.png"].axes[0].get_lines()
    assert curve.get_label() == "validation mAP (VOC07)"
    np.testing.assert_allclose(curve.get_ydata(), [0.2, 0.4])
    assert Image.open(tmp_path / "mAP.png").size == (600, 400)
    assert saved["mAP.png"].axes[0].get_ylim()[0] == 0  # an mAP is never below 0
    # The loss on a log scale: the first steps' loss would flatten the rest.
    train, test = saved["loss.png"].axes[0].get_lines()
    assert saved["loss.png"].axes[0].get_yscale() == "log"
    assert train.get_label() == "train loss" and test.get_label() == "validation loss"
    np.testing.assert_allclose(train.get_ydata(), [1, 0.5])
    np.testing.assert_allclose(test.get_ydata(), [3, 1.5])
    # The evaluated loss dashed, in its training curve's colour.
    assert test.get_color() == train.get_color() and test.get_linestyle() == "--"


def test_every_loss_term_is_drawn_for_training_and_evaluation_in_pairs(tmp_path, saved):
    terms = ("loss", "coord", "object", "noobj", "class")  # the README's curves
    for epoch in (1, 2):
        record = {"step": epoch, "epoch": epoch, "test_mAP": 0.1}
        for i, term in enumerate(terms):
            record |= {term: (i + 1) / epoch, f"test_{term}": (i + 1) * 2 / epoch}
        workdir_io.append_metrics(tmp_path, record)
    plots.plot_training_curves(tmp_path)
    lines = {line.get_label(): line for line in saved["loss.png"].axes[0].get_lines()}
    assert sorted(lines) == sorted([f"train {t}" for t in terms] + [f"test {t}" for t in terms])
    colours = set()
    for i, term in enumerate(terms):
        train, test = lines[f"train {term}"], lines[f"test {term}"]
        np.testing.assert_allclose(train.get_ydata(), [i + 1, (i + 1) / 2])
        np.testing.assert_allclose(test.get_ydata(), [(i + 1) * 2, i + 1])
        assert test.get_color() == train.get_color() and test.get_linestyle() == "--"
        assert train.get_linestyle() == "-"
        colours.add(train.get_color())
    assert len(colours) == len(terms)  # each term its own colour
