"""configs/*.py: the recipes they claim."""

import pytest

from configs import voc


@pytest.mark.parametrize("variant", ["resnet152", "vgg16", "darknet", "darknet_gn"])
def test_voc_report_option_is_the_report_recipe_for_every_backbone(variant):
    # Table 1 of the seed report: Adam, batch 19, 1e-4 x 15 / 1e-5 x 10 / 5e-6 x 15 epochs,
    # no weight decay, no augmentation and no gradient clipping, whatever the backbone (the
    # from-scratch variants' clipping belongs to their SGD recipe, not to the report's).
    config = voc.get_config(f"{variant},report")
    train = config.train
    assert (train.optimizer, train.batch_size, train.learning_rate) == ("adam", 19, 1e-4)
    assert (train.num_epochs, train.warmup_epochs, train.weight_decay) == (40, 0.0, 0.0)
    assert tuple(train.lr_drop_epochs) == (15.0, 25.0)
    assert train.grad_clip_norm == 0.0
    # Its loss (section 4.3): the no-object term over the cells without an object, where the
    # paper's recipe (Darknet's) also counts a cell's unassigned predictors.
    assert config.loss.noobj_on_unassigned is False
    assert voc.get_config(variant).loss.noobj_on_unassigned is True


def test_voc_from_scratch_sgd_recipe_keeps_its_clipping():
    assert voc.get_config("darknet").train.grad_clip_norm == 10.0
    assert voc.get_config("resnet152").train.grad_clip_norm == 0.0
