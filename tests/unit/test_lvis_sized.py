"""seesaw_lvis.data.lvis_sized: LVIS v1's shape without its pixels (the `full` stand-ins)."""
from __future__ import annotations

import json

from seesaw_lvis.data import lvis_sized as L
from seesaw_lvis.data import stats


def test_image_counts_have_lvis_v1_groups():
    counts = L.image_counts(0)
    assert len(counts) == 1203
    assert ((counts >= 1) & (counts <= 10)).sum() == 337
    assert ((counts >= 11) & (counts <= 100)).sum() == 461
    assert (counts > 100).sum() == 405
    assert (L.image_counts(0) == counts).all() and not (L.image_counts(1) == counts).all()


def test_class_freq_stand_in_is_what_eql_reads(tmp_path):
    from seesaw_lvis.models.losses.eql import load_class_freq

    doc = L.class_freq_stand_in()
    path = tmp_path / "class_freq.json"
    path.write_text(json.dumps(doc))
    freq = load_class_freq(path)
    assert len(freq) == 1203 and doc["groups"] == {"r": 337, "c": 461, "f": 405}
    assert min(freq) == 1 / L.LVIS_V1["train_images"]


def test_train_annotations_are_lvis_format_with_the_stated_tail():
    pairs = int(L.image_counts(3).sum())  # (image, category) pairs: at least one instance each
    train = L.train_annotations(seed=3, num_images=3000, instances=2 * pairs)
    assert len(train["images"]) == 3000 and len(train["categories"]) == 1203
    # the stats stage recomputes the groups from the annotations: they match the JSON's fields
    s = stats.compute(train)
    assert s["frequency_mismatches"] == [] and s["groups"] == {"r": 337, "c": 461, "f": 405}
    assert s["unused_categories"] == 0
    # the instance total is as asked, within the geometric draw's noise
    assert abs(len(train["annotations"]) - 2 * pairs) < 0.02 * 2 * pairs
    a = train["annotations"][0]
    x, y, w, h = a["bbox"]
    assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 480 and len(a["segmentation"][0]) == 8
