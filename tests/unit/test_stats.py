"""Class-frequency statistics against a hand-computed case, and the written artifacts."""
from __future__ import annotations

import csv
import json
import math

import pytest

from seesaw_lvis.data import stats


def tiny_train() -> dict:
    """4 images; cat 1 in images 1,2,3 (4 instances), cat 2 in image 1, cat 3 in no image."""
    return {
        "images": [{"id": i} for i in (1, 2, 3, 4)],
        "categories": [{"id": 1, "name": "a", "frequency": "r"},
                       {"id": 2, "name": "b", "frequency": "c"},   # wrong on purpose: 1 image is rare
                       {"id": 3, "name": "c", "frequency": "r"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 1},
                        {"id": 3, "image_id": 2, "category_id": 1}, {"id": 4, "image_id": 3, "category_id": 1},
                        {"id": 5, "image_id": 1, "category_id": 2}],
    }


def test_hand_computed_case():
    t = 0.5
    s = stats.compute(tiny_train(), rfs_threshold=t)
    by_id = {c["category_id"]: c for c in s["categories"]}
    assert by_id[1]["instance_count"] == 4 and by_id[1]["image_count"] == 3
    assert by_id[2]["instance_count"] == 1 and by_id[2]["image_count"] == 1
    assert by_id[1]["image_fraction"] == pytest.approx(0.75)
    # r_c = max(1, sqrt(t / f_c)): cat 1: sqrt(0.5/0.75) < 1 -> 1; cat 2: sqrt(0.5/0.25) = sqrt(2)
    assert by_id[1]["repeat_factor"] == 1.0
    assert by_id[2]["repeat_factor"] == pytest.approx(math.sqrt(2))
    assert by_id[3]["repeat_factor"] is None and s["unused_categories"] == 1
    # image factor = max over its categories; image 4 has none -> 1
    assert s["image_repeat_factors"] == {"1": pytest.approx(math.sqrt(2)), "2": 1.0, "3": 1.0, "4": 1.0}
    assert s["expected_epoch_images_rfs"] == pytest.approx(3 + math.sqrt(2))
    assert s["groups"] == {"r": 2, "c": 0, "f": 0}
    # the JSON said 'c' for category 2, LVIS's rule says 'r': reported, not hidden
    assert s["frequency_mismatches"] == [{"category_id": 2, "name": "b", "image_count": 1,
                                          "recomputed": "r", "in_json": "c"}]


def test_lvis_threshold_default():
    s = stats.compute(tiny_train())
    assert s["rfs_threshold"] == 0.001
    assert all(c["repeat_factor"] in (None, 1.0) for c in s["categories"])  # every f_c >= 0.25 >> t


def test_unknown_category_is_named():
    train = tiny_train()
    train["annotations"].append({"id": 9, "image_id": 1, "category_id": 77})
    with pytest.raises(ValueError, match="annotation 9 has unknown category_id 77"):
        stats.compute(train, source="x.json")


def test_run_writes_csv_json_and_plots(tmp_path, default_dataset):
    out = tmp_path / "out"
    s = stats.run(default_dataset / "annotations/lvis_v1_train.json", out / "f.csv", out / "f.json",
                  out / "f.png", out / "f.svg", rfs_threshold=0.001, title="t")
    assert s["frequency_mismatches"] == []  # the generator's groups agree with the JSON
    assert all(s["groups"][g] >= 5 for g in "rcf")
    rows = list(csv.DictReader((out / "f.csv").open()))
    assert len(rows) == s["num_categories"]
    assert json.loads((out / "f.json").read_text())["groups"] == s["groups"]
    assert (out / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "f.svg").read_bytes()[:500]
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
