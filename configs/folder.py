"""Any folder of images with PASCAL VOC XML files, like the seed report's Roboflow Mask
Wearing and MakeML traffic-sign datasets: in VOC layout (Annotations/*.xml, JPEGImages/*,
optional ImageSets/Main/*.txt), or each XML beside its image as Roboflow's "Pascal VOC"
export writes them (in train/, valid/, test/ folders, or all in one).

    python train.py --config configs/folder.py:tiny --config.data.folder=/data/masks \\
        --workdir runs/masks-tiny
    python train.py --config configs/folder.py:resnet152 --config.data.folder=/data/masks \\
        --workdir runs/masks

Variants: ``tiny``, configs/shapes.py's small Darknet and recipe at 224 px, from scratch,
sized for a CPU (a first model of a few hundred images in minutes); or a backbone named as
in configs/voc.py (default resnet152, which needs ported ImageNet weights and a GPU). The
class count comes from the folder (names found in the XML files, or
--config.data.class_names); without ImageSets or split folders the images are split about
90:10 train/validation, each by a hash of its name.
"""

from configs import shapes, voc
from yolojax.config import default_config


def get_config(arg=None):
    variant, *options = (arg or "resnet152").split(",")
    if variant not in ("tiny", *voc.PRETRAINED, *voc.FROM_SCRATCH):
        raise ValueError(
            f"Unknown configs/folder.py variant {variant!r}; choose 'tiny' or a backbone of "
            f"configs/voc.py: {voc.PRETRAINED + voc.FROM_SCRATCH}."
        )
    if variant == "tiny" and options:
        raise ValueError(f"configs/folder.py:tiny takes no options; got {options}.")
    if variant == "tiny":
        config = default_config()
        recipe = shapes.get_config()  # its data section is the synthetic set's: not taken
        config.model, config.train = recipe.model, recipe.train
        config.train.num_epochs = 30  # a folder of a few hundred images: 30 passes
        config.eval.every_epochs = 10
        config.data.image_size = 224  # photos' objects are smaller than the shapes'
        config.data.normalization = "unit"
    else:
        config = voc.get_config(arg)
    config.data.source = "voc_folder"
    config.model.num_classes = 0  # 0 = as many as the folder's classes
    return config
