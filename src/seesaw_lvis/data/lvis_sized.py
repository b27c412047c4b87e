"""LVIS v1's size and long tail without its pixels: stand-ins for what ``full`` reads.

LVIS v1 (Gupta et al. 2019; the v1 release notes): 1203 categories, of which 337 rare (1-10
training images), 461 common (11-100) and 405 frequent (more than 100); 100,170 training
images holding 1,270,141 instances; 19,809 validation images. The pipeline's ``full`` scale
reads class frequencies of that shape (EQL's lambda, repeat-factor sampling); these helpers
make them where the real annotations are not at hand (the CPU step of every row at ``full``,
:mod:`seesaw_lvis.bench.full_scale`), never as results.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from seesaw_lvis.data.frequency import frequency_group

LVIS_V1 = {"categories": 1203, "rare": 337, "common": 461, "frequent": 405, "train_images": 100_170,
           "train_instances": 1_270_141, "val_images": 19_809}


FREQUENT_MAX_IMAGES = 2650  # our choice: ~3.4 categories per image, 12.7 instances (LVIS v1's mean)


def image_counts(seed: int = 0) -> np.ndarray:
    """Training image count per category (category id order), with LVIS v1's rare / common /
    frequent split: rare uniform in 1-10, common in 11-100, frequent log-uniform from 101 to
    ``FREQUENT_MAX_IMAGES``; the groups interleaved over the ids by a seeded permutation."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([
        rng.integers(1, 11, LVIS_V1["rare"]),
        rng.integers(11, 101, LVIS_V1["common"]),
        np.exp(rng.uniform(np.log(101), np.log(FREQUENT_MAX_IMAGES), LVIS_V1["frequent"])).astype(np.int64),
    ])
    return counts[rng.permutation(len(counts))]


def class_freq_stand_in(seed: int = 0) -> dict[str, Any]:
    """``{"class_freq": [image fraction per category], "groups": {r, c, f}}``: what EQL reads
    (``load_class_freq`` accepts it), in LVIS v1's shape."""
    counts = image_counts(seed)
    groups = [frequency_group(int(n)) for n in counts]
    return {"class_freq": (counts / LVIS_V1["train_images"]).tolist(),
            "groups": {g: groups.count(g) for g in "rcf"},
            "source": "seesaw_lvis.data.lvis_sized.class_freq_stand_in (LVIS v1's shape, not its counts)"}


def train_annotations(seed: int = 0, num_images: int = LVIS_V1["train_images"],
                      instances: int = LVIS_V1["train_instances"]) -> dict[str, Any]:
    """An LVIS v1-format training dict of LVIS v1's size and long tail, without pixels.

    1203 categories (mmdet's LVIS v1 names) with :func:`image_counts` images each (337 rare,
    461 common, 405 frequent, so the ``frequency`` fields hold by LVIS's rule), the images of
    a category drawn at random, and on each (image, category) pair a geometric number of
    instances (mean chosen so the total is ``instances``) with a box and a 4-point polygon
    inside 640 x 480. Deterministic in ``seed``; what the ``stats`` stage meets at ``full``.
    """
    from mmdet.datasets.lvis import LVISV1Dataset

    names = LVISV1Dataset.METAINFO["classes"]
    rng = np.random.default_rng(seed)
    counts = np.minimum(image_counts(seed), num_images)
    pairs = int(counts.sum())
    mean = max(1.0, instances / pairs)
    w, h = 640, 480
    images = [{"id": i + 1, "width": w, "height": h, "coco_url": f"train2017/{i + 1:012d}.jpg",
               "neg_category_ids": [], "not_exhaustive_category_ids": []} for i in range(num_images)]
    anns: list[dict] = []
    for k, n in enumerate(counts.tolist()):
        img_ids = rng.choice(num_images, size=n, replace=False) + 1
        per_pair = rng.geometric(1.0 / mean, size=n)
        sizes = rng.uniform(8, 200, size=(int(per_pair.sum()), 2))
        corners = rng.uniform(0, 1, size=(len(sizes), 2)) * ([w, h] - sizes)
        j = 0
        for img_id, m in zip(img_ids.tolist(), per_pair.tolist()):
            for _ in range(m):
                (x, y), (bw, bh) = corners[j], sizes[j]
                j += 1
                poly = [round(v, 1) for v in (x, y, x + bw, y, x + bw, y + bh, x, y + bh)]
                anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": k + 1,
                             "bbox": [round(x, 1), round(y, 1), round(bw, 1), round(bh, 1)],
                             "area": round(bw * bh, 1), "segmentation": [poly]})
    categories = [{"id": k + 1, "name": names[k], "synset": f"{names[k]}.n.01", "synonyms": [names[k]],
                   "def": "", "image_count": int(n), "instance_count": 0, "frequency": frequency_group(int(n))}
                  for k, n in enumerate(counts.tolist())]
    for a in anns:
        categories[a["category_id"] - 1]["instance_count"] += 1
    return {"info": {"description": "LVIS v1-sized stand-in (seesaw_lvis.data.lvis_sized): no pixels"},
            "licenses": [], "images": images, "annotations": anns, "categories": categories}
