"""The layout of the network's raw output, which the loss and the decoding both read.

Per cell of the ``S × S`` grid, ``C + 5B`` channels: ``C`` class scores, then for each of
the ``B`` boxes ``[confidence, x, y, w, h]``, with ``x, y`` the box centre's offset inside
its cell and ``w, h`` its size in cell units (docs/architecture.md).
"""

from yolojax.validation import check_positive_int


def output_channels(num_classes: int, num_boxes: int) -> int:
    """``C + 5B``, the channels of one grid cell's output."""
    check_positive_int("num_classes", num_classes)
    check_positive_int("num_boxes", num_boxes)
    return num_classes + 5 * num_boxes


def check_grid_layout(outputs, name: str) -> None:
    """Raises unless ``outputs`` is ``(N, S, S, channels)``: a batch of square grids."""
    if outputs.ndim != 4 or outputs.shape[1] != outputs.shape[2]:
        one_grid = outputs.ndim == 3 and outputs.shape[0] == outputs.shape[1]
        hint = f" For one image's grid, pass {name}[None]." if one_grid else ""
        raise ValueError(f"{name} must have shape (N, S, S, C + 5B); got {outputs.shape}.{hint}")


def split_predictions(predictions, *, num_classes: int, num_boxes: int, name="predictions"):
    """Splits raw network outputs into class scores and per-box fields.

    Args:
      predictions: ``(..., C + 5B)`` raw outputs.
      name: what the caller calls ``predictions``, for the error message.

    Returns:
      ``class_scores (..., C)`` and ``box_fields (..., B, 5)`` holding
      ``[confidence, x, y, w, h]`` per box (cell units, see docs/architecture.md).
    """
    expected = output_channels(num_classes, num_boxes)
    if predictions.shape[-1] != expected:
        raise ValueError(
            f"{name} have {predictions.shape[-1]} channels, expected C + 5B = {expected} "
            f"for num_classes={num_classes}, num_boxes={num_boxes}."
        )
    class_scores = predictions[..., :num_classes]
    box_fields = predictions[..., num_classes:].reshape(*predictions.shape[:-1], num_boxes, 5)
    return class_scores, box_fields
