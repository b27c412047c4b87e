"""seesaw_lvis.evaluation.bootstrap: the match table's AP equals ``evaluate`` unweighted and
on physically duplicated image sets when weighted; save/load; bootstrap image weights."""
from __future__ import annotations

import copy
import zipfile

import numpy as np
import pytest

from seesaw_lvis.bench.eval import make_detections, make_gt
from seesaw_lvis.evaluation import evaluate
from seesaw_lvis.evaluation.bootstrap import MatchTable, image_weights
from seesaw_lvis.evaluation.lvis_eval import evaluate_with_matches
from tests.unit.test_lvis_eval import _detections, _federated_gt

TOL = 1e-12
IOU_TYPES = ("bbox", "segm")


def _assert_same(got: dict, want: dict, cat_ids: np.ndarray) -> None:
    """``MatchTable.metrics`` against ``evaluate``'s metrics of one iou type."""
    for k in ("AP", "APr", "APc", "APf"):
        assert (got[k] is None) == (want[k] is None), (k, got[k], want[k])
        if got[k] is not None:
            assert abs(got[k] - want[k]) <= TOL, (k, got[k], want[k])
    exp = [want["per_class"][str(c)] for c in cat_ids.tolist()]
    exp = np.array([np.nan if v is None else v for v in exp])
    np.testing.assert_allclose(got["per_class"], exp, rtol=0, atol=TOL)


def _special_gt(num_images: int, seed: int, num_cats: int) -> dict:
    """``make_gt`` (r/c/f categories, negative and not-exhaustive lists, polygons) plus an
    ``ignore`` GT and a category without any GT that is in a negative list."""
    gt = make_gt(num_images, seed=seed, num_cats=num_cats)
    gt["annotations"][1]["ignore"] = 1
    gt["categories"].append({"id": num_cats + 1, "name": "nogt", "frequency": "c"})
    gt["images"][0]["neg_category_ids"].append(num_cats + 1)
    return gt


def _tables(gt: dict, dets: list) -> tuple[dict, dict]:
    metrics, tables = evaluate_with_matches(gt, dets, iou_types=IOU_TYPES)
    assert metrics == evaluate(gt, dets, iou_types=IOU_TYPES)  # the same numbers as evaluate
    assert set(tables) == set(IOU_TYPES)
    return metrics, tables


def test_unweighted_equals_evaluate_on_generated_data():
    gt = _special_gt(10, seed=8, num_cats=20)  # GT of 7 f, 4 c and 3 r categories
    dets = make_detections(gt, 30, seed=8, score_decimals=2)  # many score ties
    # a category with GT but no detection (AP 0), and a detection of the GT-less category
    dropped = 3
    assert any(a["category_id"] == dropped for a in gt["annotations"])
    dets = [d for d in dets if d["category_id"] != dropped]
    dets.append(dict(dets[0], image_id=gt["images"][0]["id"], category_id=21, score=0.97))
    metrics, tables = _tables(gt, dets)
    for t in IOU_TYPES:
        table = tables[t]
        got = table.metrics()
        _assert_same(got, metrics[t], table.cat_ids)
        k = int(np.flatnonzero(table.cat_ids == dropped)[0])
        assert got["per_class"][k] == 0.0 and not np.any(table.det_cat == k)
        assert np.isnan(got["per_class"][-1]) and np.any(table.det_cat == len(table.cat_ids) - 1)
        assert all(got[g] is not None for g in ("APr", "APc", "APf")) and 0 < got["AP"] < 1
        assert table.tp.shape == (10, len(table.det_cat)) and not np.any(table.tp & table.fp)
        np.testing.assert_array_equal(table.metrics(np.ones(table.num_images))["per_class"],
                                      got["per_class"])


def test_unweighted_equals_evaluate_on_federated_special_cases(small_dataset):
    """The special cases of test_lvis_eval: not-exhaustive categories, an ignored GT, one of
    area 0 and one of id 0, equal IoUs, images without detections, score ties."""
    gt = _federated_gt(small_dataset)
    dets = _detections(gt, seed=0)
    metrics, tables = _tables(gt, dets)
    for t in IOU_TYPES:
        _assert_same(tables[t].metrics(), metrics[t], tables[t].cat_ids)


def _duplicated(gt: dict, dets: list, weights: np.ndarray) -> tuple[dict, list]:
    """``gt`` and ``dets`` with image k present ``weights[k]`` times (new image and
    annotation ids; images of weight 0 dropped)."""
    out = copy.deepcopy(gt)
    out["images"], out["annotations"] = [], []
    anns_of: dict[int, list] = {}
    for a in gt["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    dets_of: dict[int, list] = {}
    for d in dets:
        dets_of.setdefault(d["image_id"], []).append(d)
    new_dets, img_id, ann_id = [], 1, 1
    for im, w in zip(sorted(gt["images"], key=lambda im: im["id"]), weights.tolist()):
        for _ in range(int(w)):
            out["images"].append(dict(copy.deepcopy(im), id=img_id))
            for a in anns_of.get(im["id"], []):
                out["annotations"].append(dict(copy.deepcopy(a), id=ann_id, image_id=img_id))
                ann_id += 1
            new_dets += [dict(d, image_id=img_id) for d in dets_of.get(im["id"], [])]
            img_id += 1
    return out, new_dets


def test_integer_weights_equal_evaluate_on_duplicated_images():
    gt = _special_gt(8, seed=11, num_cats=12)
    dets = make_detections(gt, 15, seed=11)
    rng = np.random.default_rng(11)
    # distinct scores: no ties across images, so lvis's tie order cannot matter
    for d, s in zip(dets, rng.permutation(len(dets)).tolist()):
        d["score"] = (s + 1) / (len(dets) + 1)
    _, tables = _tables(gt, dets)
    n = tables["bbox"].num_images
    w_mixed = np.array([0, 3, 1, 2, 0, 1, 4, 2])
    w_one = np.zeros(n, dtype=np.int64)
    w_one[2] = 2  # one image twice: most categories without GT (None, nan)
    for w in (w_mixed, w_one):
        want = evaluate(*_duplicated(gt, dets, w), iou_types=IOU_TYPES)
        for t in IOU_TYPES:
            got = tables[t].metrics(w)
            _assert_same(got, want[t], tables[t].cat_ids)
            assert np.isnan(got["per_class"]).any() or w is w_mixed
        assert want["bbox"]["AP"] is not None
    with pytest.raises(ValueError, match="weights"):
        tables["bbox"].metrics(np.ones(n + 1))
    with pytest.raises(ValueError, match="weights"):
        tables["bbox"].metrics(-np.ones(n))


def test_save_load_round_trip_and_bad_files(tmp_path):
    gt = make_gt(4, seed=2, num_cats=8)
    _, tables = evaluate_with_matches(gt, make_detections(gt, 10, seed=2), iou_types="bbox")
    table = tables["bbox"]
    path = table.save(tmp_path / "sub" / "matches.bbox.npz")
    assert [p.name for p in path.parent.iterdir()] == ["matches.bbox.npz"]  # no temp file left
    back = MatchTable.load(path)
    for k in ("det_cat", "det_img", "tp", "fp", "gt_cat", "gt_img", "cat_ids", "freq"):
        np.testing.assert_array_equal(getattr(back, k), getattr(table, k))
        assert getattr(back, k).dtype == getattr(table, k).dtype
    assert back.num_images == table.num_images
    for w in (None, image_weights(table.num_images, 1, 0)[0]):
        a, b = back.metrics(w), table.metrics(w)
        assert [a[k] for k in ("AP", "APr", "APc", "APf")] == [b[k] for k in ("AP", "APr", "APc", "APf")]
        np.testing.assert_array_equal(a["per_class"], b["per_class"])

    missing = tmp_path / "missing.npz"
    with pytest.raises(ValueError, match="missing.npz"):
        MatchTable.load(missing)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz file")
    with pytest.raises(ValueError, match="bad.npz"):
        MatchTable.load(bad)
    partial = tmp_path / "partial.npz"
    np.savez_compressed(partial, det_cat=table.det_cat, tp=table.tp)
    with pytest.raises(ValueError, match=r"partial\.npz.*missing key.*det_img"):
        MatchTable.load(partial)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.npz"):
        MatchTable.load(truncated)
    assert zipfile.is_zipfile(path)


def test_image_weights():
    w = image_weights(50, 200, np.random.default_rng(3))
    assert w.shape == (200, 50) and w.dtype == np.int64 and (w >= 0).all()
    assert (w.sum(axis=1) == 50).all()
    np.testing.assert_array_equal(w, image_weights(50, 200, np.random.default_rng(3)))
    np.testing.assert_array_equal(w, image_weights(50, 200, 3))
    assert not np.array_equal(w, image_weights(50, 200, 4))
    assert 0.3 < (w == 0).mean() < 0.45  # about 1/e of the images are not drawn
    with pytest.raises(ValueError):
        image_weights(0, 10, 0)
