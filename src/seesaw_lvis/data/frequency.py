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
