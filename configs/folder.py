"""Any folder of images with PASCAL VOC XML files, like the seed report's Roboflow Mask
Wearing and MakeML traffic-sign datasets: in VOC layout (Annotations/*.xml, JPEGImages/*,
optional ImageSets/Main/*.txt), or each XML beside its image as Roboflow's "Pascal VOC"
export writes them (in train/, valid/, test/ folders, or all in one).

    python train.py --config configs/folder.py:resnet152 --config.data.folder=/data/masks \\
        --workdir runs/masks

Variants name the backbone as in configs/voc.py (default resnet152). The class count comes
from the folder (names found in the XML files, or --config.data.class_names); without
ImageSets or split folders the images are split 90:10 train/validation with a fixed seed.
"""

from configs import voc


def get_config(arg=None):
    config = voc.get_config(arg)
    config.data.source = "voc_folder"
    config.model.num_classes = 0  # 0 = as many as the folder's classes
    return config
