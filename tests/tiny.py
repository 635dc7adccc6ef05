"""The tiny synthetic-shapes run the end-to-end tests train (pytest does not collect it).

configs/shapes.py shrunk to 64 px inputs, a 4×4 grid, one 1×1-deep conv head and a few
dozen images, so that a step compiles and runs in seconds on two CPU cores. Tests that
need more (epochs, evaluations, checkpoints) set those fields on the returned config.
:func:`stored_split` reads the stored dataset, :func:`tensorboard_scalars` a run's
TensorBoard log, :func:`save_checkpoint` makes a run's checkpoint of a state.
"""

from configs import shapes


def tiny_config(data_dir: str, *, num_train: int = 32, num_test: int = 12, head_channels: int = 16):
    """One epoch of `num_train` / 8 steps, evaluated once after the last step.

    Args:
      data_dir: TFDS data folder (the synthetic set is generated there once per size).
      num_train, num_test: synthetic images in the train and test splits.
      head_channels: width of the conv head's one 3×3 layer.
    """
    config = shapes.get_config()
    config.model.grid_size = 4
    config.model.head_channels = head_channels
    config.model.head_conv_layers = 1
    config.data.tfds_data_dir = data_dir
    config.data.image_size = 64
    config.data.synthetic.num_train = num_train
    config.data.synthetic.num_test = num_test
    config.data.synthetic.image_size = 64
    config.train.batch_size = 8
    config.train.num_epochs = 1
    config.eval.every_epochs = 0  # evaluate once, after the last step
    config.eval.train_subset = 0
    return config


def save_checkpoint(config, state, workdir, step: int = 0) -> None:
    """Saves ``state`` as the checkpoint of ``step`` in the run folder ``workdir``, as
    training would for ``config``'s model."""
    from yolojax import checkpoints

    manager = checkpoints.Checkpoints(workdir, checkpoints.model_signature(config))
    manager.save(step, state)
    manager.wait()
    manager.close()


def stored_split(data_config, split: str):
    """The synthetic set's ``split`` ('train' or 'test') as stored, read with TFDS directly
    (JPEG bytes undecoded), an independent view of what the pipeline serves."""
    import tensorflow_datasets as tfds

    from yolojax.data import synthetic_shapes

    builder = synthetic_shapes.make_builder(
        synthetic_shapes.shapes_builder_config(**data_config.synthetic.to_dict()),
        data_dir=data_config.tfds_data_dir,
    )
    return builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})


def tensorboard_scalars(folder) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in ``folder``'s event files, in TensorBoard's
    reading order (file name, then record)."""
    import tensorflow as tf

    return [
        (event.step, value.tag, float(tf.make_ndarray(value.tensor)))
        for path in sorted(folder.glob("*tfevents*"))
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    ]
