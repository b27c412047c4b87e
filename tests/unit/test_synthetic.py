"""The embedded synthetic dataset: determinism, LVIS fields and groups, LVIS API and mmdet loading."""
from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from seesaw_lvis.data.frequency import frequency_group
from seesaw_lvis.data.synthetic import SyntheticSpec, generate, target_image_counts


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_output(tmp_path, small_spec, small_dataset):
    again = generate(small_spec, tmp_path / "again")
    assert tree_digest(again) == tree_digest(small_dataset)
    other = generate(replace(small_spec, seed=small_spec.seed + 1), tmp_path / "other")
    assert tree_digest(other) != tree_digest(small_dataset)


def test_default_split_has_every_lvis_group(default_dataset):
    train = json.loads((default_dataset / "annotations/lvis_v1_train.json").read_text())
    images_of = collections.defaultdict(set)
    for a in train["annotations"]:
        images_of[a["category_id"]].add(a["image_id"])
    groups = collections.Counter(frequency_group(len(v)) for v in images_of.values())
    assert len(images_of) == len(train["categories"]), "every category must appear in train"
    assert all(groups[g] >= 5 for g in "rcf"), groups
    # The JSON's own fields agree with what the annotations say.
    for cat in train["categories"]:
        assert cat["image_count"] == len(images_of[cat["id"]])
        assert cat["frequency"] == frequency_group(cat["image_count"])


def test_lvis_fields_are_complete(small_dataset):
    for split in ("train", "val"):
        doc = json.loads((small_dataset / f"annotations/lvis_v1_{split}.json").read_text())
        for cat in doc["categories"]:
            assert {"id", "name", "synset", "frequency", "image_count", "instance_count"} <= set(cat)
        ids = {c["id"] for c in doc["categories"]}
        for img in doc["images"]:
            assert {"id", "width", "height", "coco_url", "neg_category_ids",
                    "not_exhaustive_category_ids"} <= set(img)
            assert (small_dataset / img["coco_url"]).is_file()
            assert set(img["neg_category_ids"]) <= ids
        anns_of = collections.defaultdict(set)
        for a in doc["annotations"]:
            assert {"id", "image_id", "category_id", "bbox", "area", "segmentation"} <= set(a)
            assert a["area"] > 0 and a["bbox"][2] > 0 and a["bbox"][3] > 0
            assert all(len(poly) >= 6 and len(poly) % 2 == 0 for poly in a["segmentation"])
            anns_of[a["image_id"]].add(a["category_id"])
        for img in doc["images"]:  # a negative category is never present in its image
            assert not set(img["neg_category_ids"]) & anns_of[img["id"]]


def test_val_categories_carry_train_frequencies(small_dataset):
    train = json.loads((small_dataset / "annotations/lvis_v1_train.json").read_text())
    val = json.loads((small_dataset / "annotations/lvis_v1_val.json").read_text())
    assert train["categories"] == val["categories"]
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}


def test_polygons_match_masks(small_dataset):
    """The polygon rasterized by pycocotools covers the pixels the annotation's area counts."""
    from pycocotools import mask as mask_utils

    doc = json.loads((small_dataset / "annotations/lvis_v1_train.json").read_text())
    img = {i["id"]: i for i in doc["images"]}
    ratios = []
    for a in doc["annotations"][:100]:
        h, w = img[a["image_id"]]["height"], img[a["image_id"]]["width"]
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
        ratios.append(float(mask_utils.area(rle)) / a["area"])
    assert 0.93 < np.median(ratios) < 1.07, np.median(ratios)
    assert min(ratios) > 0.75, min(ratios)


def test_loads_with_lvis_api(small_dataset):
    from seesaw_lvis.compat import install

    install()
    from lvis import LVIS

    api = LVIS(str(small_dataset / "annotations/lvis_v1_train.json"))
    assert len(api.get_img_ids()) == 40
    assert len(api.get_cat_ids()) == 8
    ann = api.load_anns(api.get_ann_ids(img_ids=[1]))[0]
    assert api.ann_to_mask(ann).sum() > 0


def test_loads_with_mmdet_lvis_dataset(small_dataset):
    from mmdet.datasets import LVISV1Dataset

    # LVISV1Dataset's METAINFO lists the 1203 LVIS names; our configs pass the JSON's own.
    names = tuple(c["name"] for c in json.loads(
        (small_dataset / "annotations/lvis_v1_train.json").read_text())["categories"])
    ds = LVISV1Dataset(data_root=str(small_dataset), ann_file="annotations/lvis_v1_train.json",
                       metainfo=dict(classes=names), data_prefix=dict(img=""), pipeline=[],
                       test_mode=False)
    assert len(ds.metainfo["classes"]) == 8
    item = ds[0]
    assert Path(item["img_path"]).is_file()
    assert item["instances"] and item["instances"][0]["mask"]


def test_category_names_known_without_generating(small_spec, small_dataset):
    from seesaw_lvis.data.synthetic import category_names

    cats = json.loads((small_dataset / "annotations/lvis_v1_train.json").read_text())["categories"]
    assert category_names(small_spec) == [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


def test_target_counts_fall_off_geometrically():
    counts = target_image_counts(SyntheticSpec())
    assert counts[0] == 300 and counts[-1] == 1
    assert all(a >= b for a, b in zip(counts, counts[1:]))


@pytest.mark.parametrize("change, message", [
    (dict(max_images_per_class=999), "max_images_per_class"),
    (dict(num_classes=1000), "num_classes"),
    (dict(min_val_images_per_class=500), "min_val_images_per_class"),
])
def test_bad_spec_is_refused_and_writes_nothing(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        generate(replace(SyntheticSpec(), **change), tmp_path / "out")
    assert not (tmp_path / "out").exists()
