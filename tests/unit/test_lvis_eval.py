"""seesaw_lvis.evaluation: equal to lvis-api 0.5.3 (every metric, per-class AP), hand-checked AP,
the 300-per-image cap, clear errors."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from seesaw_lvis.bench.eval import lvis_api_metrics, make_detections, make_gt, max_abs_diff
from seesaw_lvis.evaluation import evaluate, run
from seesaw_lvis.evaluation.lvis_eval import SUMMARY_KEYS, headline

TOL = 1e-4
# lvis-api 0.5.3 calls logger.warn when given a results list
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")


def _val(small_dataset: Path) -> Path:
    return small_dataset / "annotations" / "lvis_v1_val.json"


def _federated_gt(small_dataset: Path) -> dict:
    """The small val GT plus every special case lvis handles: a category without GT in val
    (but in negative lists), not-exhaustive categories, a duplicated GT (equal IoUs), an
    ``ignore`` GT, a GT of area 0 and one of id 0."""
    gt = json.loads(_val(small_dataset).read_text())
    anns = gt["annotations"]
    gone = 5  # category with no GT in val: its detections are then unmatched or ignored
    anns[:] = [a for a in anns if a["category_id"] != gone]
    for im in gt["images"]:
        pos = sorted({a["category_id"] for a in anns if a["image_id"] == im["id"]})
        im["not_exhaustive_category_ids"] = [c for c in im["not_exhaustive_category_ids"] if c != gone]
        if gone not in im["neg_category_ids"]:
            im["neg_category_ids"] = sorted(im["neg_category_ids"] + [gone])
        if im["id"] % 3 == 0 and pos:
            im["not_exhaustive_category_ids"] = sorted(set(im["not_exhaustive_category_ids"]) | {pos[0]})
    nid = max(a["id"] for a in anns) + 1
    dup = copy.deepcopy(anns[2])
    dup["id"] = nid
    anns.append(dup)
    anns[4]["ignore"] = 1
    anns[6]["area"] = 0.0
    anns[0]["id"] = 0
    return gt


def _detections(gt: dict, seed: int, per_image: int = 25) -> list[dict]:
    rng = np.random.default_rng(seed)
    dets = make_detections(gt, per_image, seed, score_decimals=2)  # many score ties
    skip = {im["id"] for im in gt["images"][::4]}  # images without any detection
    dets = [d for d in dets if d["image_id"] not in skip]
    return [dets[i] for i in rng.permutation(len(dets))]  # images interleaved in the file


def _check_equal(ours: dict, theirs: dict) -> None:
    for k in SUMMARY_KEYS:
        a, b = ours[k], theirs[k]
        assert (a is None) == (b is None), (k, a, b)
        if a is not None:
            assert abs(a - b) <= TOL, (k, a, b)
    assert ours["per_class"].keys() == theirs["per_class"].keys()
    for c, a in ours["per_class"].items():
        b = theirs["per_class"][c]
        assert (a is None) == (b is None), (c, a, b)
        if a is not None:
            assert abs(a - b) <= TOL, (c, a, b)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_lvis_api_on_small_dataset(small_dataset, tmp_path, seed):
    gt = _federated_gt(small_dataset)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    dets = _detections(gt, seed)
    before = copy.deepcopy((gt, dets))
    ours = evaluate(gt, dets, iou_types=("bbox", "segm"))
    assert (gt, dets) == before, "evaluate must not modify its inputs"
    for t in ("bbox", "segm"):
        theirs = lvis_api_metrics(gt_path, copy.deepcopy(dets), t)
        _check_equal(ours[t], theirs)
        assert ours[t]["per_class"]["5"] is None  # no GT in val
        assert any(v is not None and v > 0 for v in ours[t]["per_class"].values())


def test_equals_lvis_api_all_area_ranges_and_groups(tmp_path):
    """640x480 images: small, medium and large objects, rare/common/frequent categories."""
    gt = make_gt(12, seed=5, num_cats=24)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    dets = make_detections(gt, 40, seed=5, score_decimals=2)
    ours = evaluate(gt_path, dets)
    for t in ("bbox", "segm"):
        theirs = lvis_api_metrics(gt_path, copy.deepcopy(dets), t)
        _check_equal(ours[t], theirs)
        assert max_abs_diff(ours[t], theirs) <= TOL
        for k in ("APs", "APm", "APl", "APr", "APc", "APf"):
            assert ours[t][k] is not None, k


def _tiny_gt(frequency: str = "f") -> dict:
    return {
        "images": [{"id": 1, "width": 100, "height": 100, "neg_category_ids": [2],
                    "not_exhaustive_category_ids": []}],
        "categories": [{"id": 1, "name": "a", "frequency": frequency},
                       {"id": 2, "name": "b", "frequency": "r"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                         "area": 1600.0, "segmentation": [[10, 10, 50, 10, 50, 50, 10, 50]]}],
    }


def test_hand_checked_ap():
    """One GT box [10,10,40,40]; d1 (score .9) at IoU 1240/1960 = 0.633, d2 (.8) at
    IoU 1500/1700 = 0.882. Thresholds .50-.60: d1 TP at rank 1 -> AP 1; .65-.85: d1 FP, d2 TP
    -> precision 1/2 at recall 1 -> AP .5; .90, .95: no match -> 0. AP = (3 + 5 * .5) / 10."""
    gt = _tiny_gt()
    d1 = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [19, 10, 40, 40]}
    d2 = {"image_id": 1, "category_id": 1, "score": 0.8, "bbox": [12.5, 10, 40, 40]}
    ious = mask_utils.iou([d1["bbox"], d2["bbox"]], [[10, 10, 40, 40]], [0])[:, 0]
    assert ious == pytest.approx([1240 / 1960, 1500 / 1700])
    # category 2 is in the negative list: its detection is a false positive, but the category
    # has no GT, so it stays -1 (None) and does not enter the means
    d3 = {"image_id": 1, "category_id": 2, "score": 0.99, "bbox": [0, 0, 5, 5]}
    res = evaluate(gt, [d1, d2, d3], iou_types="bbox")["bbox"]
    assert res["AP"] == pytest.approx(0.55)
    assert res["AP50"] == pytest.approx(1.0)
    assert res["AP75"] == pytest.approx(0.5)
    assert res["APm"] == pytest.approx(0.55)  # area 1600 is medium
    assert res["APs"] is None and res["APl"] is None
    assert res["APf"] == pytest.approx(0.55) and res["APr"] is None and res["APc"] is None
    assert res["per_class"] == {"1": pytest.approx(0.55), "2": None}
    assert res["AR@300"] == pytest.approx(0.8)  # recall 1 at 8 of 10 thresholds
    # a not-exhaustive category: the unmatched d1 is ignored at .65-.85, so AP there is 1
    gt["images"][0]["not_exhaustive_category_ids"] = [1]
    res = evaluate(gt, [d1, d2], iou_types="bbox")["bbox"]
    assert res["AP"] == pytest.approx(0.8)
    # a category outside the image's positive and negative sets is not evaluated at all
    gt["images"][0]["neg_category_ids"] = []
    gt["images"][0]["not_exhaustive_category_ids"] = []
    d4 = {"image_id": 1, "category_id": 2, "score": 0.99, "bbox": [10, 10, 40, 40]}
    assert evaluate(gt, [d1, d2, d4], iou_types="bbox")["bbox"]["AP"] == pytest.approx(0.55)


def test_max_dets_cap(tmp_path):
    """310 detections on one image: lvis keeps the top 300 by score (ties in file order)."""
    gt = _tiny_gt()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    rng = np.random.default_rng(0)
    fps = [{"image_id": 1, "category_id": 1, "score": 0.5,
            "bbox": [float(x) for x in rng.uniform(50, 90, 2)] + [5.0, 5.0]} for _ in range(308)]
    good = {"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [10, 10, 40, 40]}
    low = {"image_id": 1, "category_id": 1, "score": 0.1, "bbox": [10, 10, 40, 40]}
    # the TP ties with the FPs at 0.5 and comes last in the file: the cap drops it
    dets = fps + [good, low]
    capped = evaluate(gt, dets, iou_types="bbox")["bbox"]
    assert capped["AP"] == 0.0
    uncapped = evaluate(gt, dets, iou_types="bbox", max_dets=-1)["bbox"]
    assert uncapped["AP"] > 0
    _check_equal(capped, lvis_api_metrics(gt_path, copy.deepcopy(dets), "bbox"))
    _check_equal(uncapped, lvis_api_metrics(gt_path, copy.deepcopy(dets), "bbox", max_dets=-1))
    # first in the file, it survives the cap
    assert evaluate(gt, [good] + fps + [low], iou_types="bbox")["bbox"]["AP"] > 0


def test_bad_input_raises_clear_value_errors(tmp_path):
    gt = _tiny_gt()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    d = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 40, 40]}
    with pytest.raises(ValueError, match="missing_gt.json"):
        evaluate(tmp_path / "missing_gt.json", [d])
    with pytest.raises(ValueError, match="missing_dt.json"):
        evaluate(gt_path, tmp_path / "missing_dt.json")
    dt_path = tmp_path / "dt.json"
    dt_path.write_text(json.dumps([d, dict(d, image_id=77)]))
    with pytest.raises(ValueError, match=r"dt\.json.*results\[1\].*image_id=77"):
        evaluate(gt_path, dt_path, iou_types="bbox")
    dt_path.write_text(json.dumps([dict(d, category_id=9)]))
    with pytest.raises(ValueError, match=r"dt\.json.*category_id=9"):
        evaluate(gt_path, dt_path, iou_types="bbox")
    dt_path.write_text(json.dumps([d]))
    with pytest.raises(ValueError, match=r"dt\.json.*results\[0\].*'segmentation'"):
        evaluate(gt_path, dt_path, iou_types=("bbox", "segm"))
    dt_path.write_text(json.dumps([{k: v for k, v in d.items() if k != "score"}]))
    with pytest.raises(ValueError, match=r"dt\.json.*results\[0\] has no 'score'"):
        evaluate(gt_path, dt_path, iou_types="bbox")
    dt_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"dt\.json"):
        evaluate(gt_path, dt_path, iou_types="bbox")
    with pytest.raises(ValueError, match="iou_type 'keypoints'"):
        evaluate(gt_path, [d], iou_types="keypoints")
    bad_size = dict(d, segmentation={"size": [50, 50], "counts": "PPYo1"})
    with pytest.raises(ValueError, match=r"size=\[50, 50\]"):
        evaluate(gt_path, [bad_size], iou_types="segm")
    gt_bad = copy.deepcopy(gt)
    del gt_bad["images"][0]["neg_category_ids"]
    gt_path.write_text(json.dumps(gt_bad))
    with pytest.raises(ValueError, match=r"gt\.json.*'neg_category_ids'"):
        evaluate(gt_path, [d], iou_types="bbox")


def test_run_writes_metrics_and_meta(tmp_path):
    gt = _tiny_gt()
    gt_path, dt_path, out = tmp_path / "gt.json", tmp_path / "dt.json", tmp_path / "m" / "metrics.json"
    gt_path.write_text(json.dumps(gt))
    rle = mask_utils.frPyObjects([[10, 10, 50, 10, 50, 50, 10, 50]], 100, 100)[0]
    d = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 40, 40],
         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}
    dt_path.write_text(json.dumps([d]))
    res = run(gt_path, dt_path, ("bbox", "segm"), out)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert on_disk["meta"] == {"gt": str(gt_path), "results": str(dt_path), "num_images": 1,
                               "num_detections": 1, "max_dets": 300, "evaluator": "seesaw_lvis"}
    assert on_disk["bbox"]["AP"] == pytest.approx(1.0) and on_disk["segm"]["AP"] == pytest.approx(1.0)
    assert set(on_disk["segm"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
                                    "per_class"}

    summary = headline(res)  # the DVC metric: every headline number, nothing per category
    assert set(summary) == {"bbox", "segm"}
    for iou in ("bbox", "segm"):
        assert set(summary[iou]) == set(SUMMARY_KEYS)
        assert all(summary[iou][k] == res[iou][k] for k in summary[iou])
