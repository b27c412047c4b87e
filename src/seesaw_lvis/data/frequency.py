"""LVIS's frequency groups, defined once (LVIS paper, Gupta et al. 2019, sec. 3).

A category's group depends on the number of *training images* containing it.
"""

RARE_MAX = 10     # rare: 1-10 training images
COMMON_MAX = 100  # common: 11-100; frequent: more than 100


def frequency_group(image_count: int) -> str:
    """'r', 'c' or 'f' by LVIS's rule on the training image count (must be >= 1)."""
    if image_count < 1:
        raise ValueError(f"image_count={image_count}: a category with no training image has no group")
    if image_count <= RARE_MAX:
        return "r"
    if image_count <= COMMON_MAX:
        return "c"
    return "f"


# LVIS v1's training images. Two methods of the paper's pipeline threshold a category's image
# fraction f = image_count / training images with a value set on LVIS v1: EQL's lambda
# (1.1e-3, the categories in fewer than ~110 images) and RFS's t (1e-3: r_c > 1 below ~100
# images). Both bounds are the rare and common groups, which LVIS defines by image count.
LVIS_V1_TRAIN_IMAGES = 100_170


def lvis_v1_fraction_for(params, fraction: float) -> float:
    """``fraction`` (a threshold on f set on LVIS v1) for the params' training set, bounding the
    same number of training images: the value itself on LVIS v1; on the synthetic set
    ``fraction x 100,170 / train_images``. Kept as a number instead, the bound would be a third
    of an image on the 300-image synthetic set, below every category (f >= 1 / 300): EQL would
    protect nothing and RFS repeat nothing, each row's modification gone."""
    if params["dataset"] != "synthetic":
        return fraction
    return fraction * LVIS_V1_TRAIN_IMAGES / params["synthetic"]["train_images"]


def lvis_v1_prior_for(params, prior: float, num_classes: int) -> float:
    """``prior`` (a sigmoid classifier's initial class probability, set for LVIS v1's categories)
    for the params' ``num_classes``: the value itself on LVIS v1; on the synthetic set
    ``prior x 1203 / num_classes``. EQL's head starts its classifier bias at ``-log((1 - pi) /
    pi)`` with pi = 0.001, "roughly 1 / num_classes" in its authors' code (eql.detectron2,
    ``EQLFastRCNNOutputLayers``). Kept as a number on 40 categories it is a 40th of the
    prior it stands for: every class starts at a probability 30x too low, its bias ~3.4 too
    negative, which a short schedule does not train away."""
    from seesaw_lvis.data.lvis_sized import LVIS_V1

    if params["dataset"] != "synthetic":
        return prior
    return prior * LVIS_V1["categories"] / num_classes
