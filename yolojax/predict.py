"""Draws a trained model's detections on images and writes them with a JSON of the boxes.

    python -m yolojax.predict --workdir runs/shapes images/*.jpg --out out/

For each input ``name.ext`` it writes ``out/name.png`` with labelled boxes, and
``out/detections.json``: ``{image path: [{"box": [xmin, ymin, xmax, ymax] (pixels),
"score": s, "label": id, "class": name}, ...]}``.
"""

import argparse
import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from yolojax import cli, huge_pages
from yolojax.detector import Detector, ImageDetections
from yolojax.workdir import atomic_write_text, to_json


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class id (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: np.ndarray, detections: ImageDetections) -> Image.Image:
    """``(H, W, 3)`` uint8 image → a PIL image with each box and "class score" drawn."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for box, score, label, name in zip(
        detections.boxes, detections.scores, detections.labels, detections.class_names, strict=True
    ):
        color = class_color(int(label))
        draw.rectangle([float(v) for v in box], outline=color, width=2)
        text = f"{name} {score:.2f}"
        left, top = float(box[0]), max(float(box[1]) - 12, 0)
        text_box = draw.textbbox((left, top), text)
        draw.rectangle(text_box, fill=color)
        draw.text((left, top), text, fill=(0, 0, 0))
    return canvas


def read_image(path: Path) -> np.ndarray:
    """An RGB uint8 array; an unreadable file is an error naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"Cannot read image {path}: {error}") from error


def predict_files(detector: Detector, paths, out_dir) -> dict:
    """Runs ``detector`` on image files, writing drawn copies and detections.json to
    ``out_dir``; returns the detections record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {}
    for path in map(Path, paths):
        image = read_image(path)
        detections = detector(image)
        draw_detections(image, detections).save(out_dir / f"{path.stem}.png")
        record[str(path)] = [
            {"box": box.tolist(), "score": float(score), "label": int(label), "class": name}
            for box, score, label, name in zip(*detections, strict=True)
        ]
    atomic_write_text(out_dir / "detections.json", to_json(record))
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files (jpg, png, ...)")
    parser.add_argument("--workdir", required=True, help="the training run's folder")
    parser.add_argument("--out", default="predictions", help="output folder")
    parser.add_argument("--checkpoint", default="latest", help="'latest', 'best' or a step")
    parser.add_argument("--score-threshold", type=float, default=0.25)
    args = parser.parse_args(argv)
    checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    with cli.command_errors():
        detector = Detector.from_workdir(
            args.workdir, checkpoint=checkpoint, score_threshold=args.score_threshold
        )
        record = predict_files(detector, args.images, args.out)
    total = sum(len(v) for v in record.values())
    print(f"{total} detections in {len(record)} images → {Path(args.out) / 'detections.json'}")


if __name__ == "__main__":
    huge_pages.restart_with_huge_pages()
    main()
