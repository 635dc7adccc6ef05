"""PASCAL VOC 2007+2012 trainval → VOC 2007 test, the paper's setting.

Variants (``--config configs/voc.py:VARIANT``), optionally with ``,report`` for the seed
report's Table 1 recipe (Adam, batch 19, 1e-4 × 15 / 1e-5 × 10 / 5e-6 × 15 epochs) and its
reading of the loss (the no-object term over the cells without an object). The report
scored its 49.36% on VOC 2012 ("validated exclusively on 2012"); to compare with it,
evaluate on VOC 2012's validation split and leave it out of training:
``--config.data.train_split=voc/2007:train+validation+test,voc/2012:train
--config.data.eval_split=voc/2012:validation``.

  resnet152 (default)  ImageNet ResNet-152 + conv head     (weights/resnet152.msgpack)
  resnet101, resnet50, resnet34, resnet18
                       the same with a shallower ResNet     (weights/<variant>.msgpack)
  vgg16                ImageNet VGG16 + conv head          (weights/vgg16.msgpack)
  vgg16_bn             ImageNet VGG16-BN + conv head       (weights/vgg16_bn.msgpack);
                       the report's VGG16 (its Table 1 row: vgg16_bn,report)
  darknet              the paper's Darknet + fc head, BatchNorm, from scratch
  darknet_gn           Darknet with GroupNorm + fc head, from scratch

    python train.py --config configs/voc.py:vgg16 --workdir runs/vgg16
    python train.py --config configs/voc.py:resnet152,report --workdir runs/report

Needs TFDS voc/2007 and voc/2012 prepared offline (docs/data.md) and, for the ImageNet
backbones, weights ported with ``python -m yolojax.pretrained --arch ARCH --out PATH``.
"""

from yolojax.config import default_config
from yolojax.pretrained import ARCHS as PRETRAINED  # the backbones with ported weights

FROM_SCRATCH = ("darknet", "darknet_gn")


def get_config(arg=None):
    variant, *options = (arg or "resnet152").split(",")
    if variant not in PRETRAINED + FROM_SCRATCH:
        raise ValueError(
            f"Unknown configs/voc.py variant {variant!r}; choose one of "
            f"{PRETRAINED + FROM_SCRATCH}, optionally followed by ',report'."
        )
    if set(options) - {"report"}:
        raise ValueError(f"Unknown configs/voc.py options {options}; the only option is 'report'.")

    config = default_config()
    config.model.backbone = variant
    config.model.num_classes = 20
    config.data.source = "voc"
    config.data.image_size = 448
    if variant in PRETRAINED:
        config.model.head = "conv"
        config.model.pretrained = f"weights/{variant}.msgpack"
        config.data.normalization = "imagenet"
    else:
        config.model.head = "fc"  # the paper's head
        config.data.normalization = "unit"
        # From scratch the paper's 1e-2 diverges without its week of ImageNet pre-training.
        config.train.learning_rate = 1e-3
        config.train.grad_clip_norm = 10.0

    if "report" in options:  # the seed report's Table 1
        config.model.head = "seed" if variant in PRETRAINED else "fc"
        config.train.batch_size = 19
        config.train.optimizer = "adam"
        config.train.learning_rate = 1e-4
        config.train.weight_decay = 0.0
        config.train.grad_clip_norm = 0.0  # the report clips nothing (from scratch neither)
        config.train.num_epochs = 40
        config.train.warmup_epochs = 0.0
        config.train.lr_drop_epochs = (15.0, 25.0)
        config.train.lr_drop_factors = (0.1, 0.5)  # 1e-4 → 1e-5 → 5e-6
        config.data.augment.enabled = False
        # "We also need the fourth line to take cells without objects into consideration"
        # (its section 4.3): Darknet's term also counts a cell's unassigned predictors.
        config.loss.noobj_on_unassigned = False
    return config
