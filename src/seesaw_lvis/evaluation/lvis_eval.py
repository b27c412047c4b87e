"""LVIS v1 evaluation (bbox, segm): the numbers of lvis-api 0.5.3, computed with numpy.

This module re-implements ``lvis.LVISResults`` + ``lvis.LVISEval`` (``evaluate``,
``accumulate``, ``summarize``) of lvis-api 0.5.3, the version mmdet 3.3's ``LVISMetric``
uses, rule for rule, but without per-(image, category, area) Python objects:

* results: at most ``max_dets`` (300) detections per image, the top ones by score, ties
  kept in file order (``LVISResults.limit_dets_per_image``); a detection's area is
  ``w * h`` of its box when the first result has a ``bbox`` (as lvis does, also for
  ``segm``), the mask area otherwise; detections and ground truths with area <= 0 are
  dropped (``get_ann_ids``'s open area range ``(0, inf)``);
* federated protocol: in an image only the categories of its positive set (its GT
  categories) and of its ``neg_category_ids`` are evaluated; an unmatched detection of a
  category in the image's ``not_exhaustive_category_ids`` is ignored, not a false positive;
* matching: per (image, category) detections by decreasing score (stable), greedy, for the
  10 IoU thresholds .50:.05:.95 and the 4 area ranges at once (40 lanes in one numpy
  array); a detection takes the unmatched non-ignored GT of highest IoU >= threshold (the
  last one among equal IoUs, as lvis's loop does), else an ignored one; GTs are ignored by
  their ``ignore`` flag or their ``area`` outside the range; unmatched detections outside
  the range are ignored;
* accumulation: per category, detections over all images sorted by score (stable; ties by
  image id, then result order), cumulative TP/FP, the precision envelope, precision at
  101 recall points by ``np.searchsorted(side='left')``; categories without non-ignored GT
  stay -1 (reported as None).

IoUs come from pycocotools' C ``maskUtils.iou`` for masks, one call per (image, category)
that has both detections and ground truths (only those GTs/detections are turned into
RLEs), and from the same formula vectorised in numpy for boxes (bit-identical to
``bbIou``). The greedy matching runs over all (image, category) groups at once, one step
per detection rank, only for detections that reach IoU 0.5 with some GT (the others can
match nothing). ``tests/unit/test_lvis_eval.py`` checks equality with lvis-api; the
benchmark ``seesaw_lvis.bench.eval`` measures the speed-up. ``evaluate_with_matches`` also
returns, from the same pass, each iou type's area-'all' TP/FP flags as a ``MatchTable``
(``seesaw_lvis.evaluation.bootstrap``: confidence intervals by resampling images).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pycocotools.mask as mask_utils

from seesaw_lvis.io import read_json, write_json

__all__ = ["evaluate", "evaluate_with_matches", "run", "METRIC_KEYS", "AR_KEYS", "IOU_THRS", "REC_THRS",
           "AREA_RNG", "AREA_LBL"]

log = logging.getLogger(__name__)

# Exactly lvis.eval.Params.
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RNG = np.array([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]],
                    dtype=np.float64)
AREA_LBL = ("all", "small", "medium", "large")
FREQ_LBL = ("r", "c", "f")
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
AR_KEYS = ("AR@300", "ARs@300", "ARm@300", "ARl@300")
SUMMARY_KEYS = (*METRIC_KEYS, *AR_KEYS)  # every number lvis-api prints
IOU_TYPES = ("bbox", "segm")
# lvis: ``iou = min([iou_thr, 1 - 1e-10])``
_THR_EFF = np.minimum(IOU_THRS, 1 - 1e-10)


# --------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------
def _name_of(src: Any, default: str) -> str:
    return str(src) if isinstance(src, (str, os.PathLike)) else default


def _load(src: Any, kind: str, expect: type) -> Any:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise ValueError(f"{path}: {kind} file not found")
        try:
            data = read_json(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the {kind} file: {e}") from None
    else:
        data = src
    if not isinstance(data, expect):
        raise ValueError(f"{_name_of(src, '<' + kind + '>')}: the {kind} must be a JSON "
                         f"{'object' if expect is dict else 'list'}, got {type(data).__name__}")
    return data


def _int_array(values: list, name: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        arr = None
    if arr is None or arr.ndim != 1:
        for v in values:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise ValueError(f"{name}: {what} must be an integer, got {v!r}")
        raise ValueError(f"{name}: bad {what} values")  # pragma: no cover
    return arr


def _column(records: list, key: str, name: str, what: str, default: Any = KeyError) -> list:
    try:
        if default is KeyError:
            return [r[key] for r in records]
        return [r.get(key, default) for r in records]
    except (KeyError, TypeError, AttributeError):
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise ValueError(f"{name}: {what}[{i}] is not an object: {r!r:.80}") from None
            if key not in r:
                raise ValueError(f"{name}: {what}[{i}] has no {key!r}") from None
        raise  # pragma: no cover


def _to_rle(segm: Any, h: int, w: int) -> dict:
    """lvis ``LVIS.ann_to_rle``: polygons and uncompressed RLE to compressed RLE."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, h, w)
    return segm


class _GroundTruth:
    """The GT file as arrays: images and categories sorted by id, annotations by group."""

    def __init__(self, data: dict, name: str):
        self.name = name
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"{name}: ground truth has no {key!r} list")
        images, cats, anns = data["images"], data["categories"], data["annotations"]
        img_ids = _int_array(_column(images, "id", name, "images"), name, "images[].id")
        self.img_ids, first = np.unique(img_ids, return_index=True)
        imgs = [images[i] for i in first]
        self.heights = _column(imgs, "height", name, "images")
        self.widths = _column(imgs, "width", name, "images")
        cat_ids = _int_array(_column(cats, "id", name, "categories"), name, "categories[].id")
        self.cat_ids, cfirst = np.unique(cat_ids, return_index=True)
        freqs = _column([cats[i] for i in cfirst], "frequency", name, "categories")
        self.freq_groups: list[list[int]] = [[] for _ in FREQ_LBL]
        for k, f in enumerate(freqs):
            if f not in FREQ_LBL:
                raise ValueError(f"{name}: category {int(self.cat_ids[k])} has frequency {f!r}, "
                                 f"not one of {FREQ_LBL}")
            self.freq_groups[FREQ_LBL.index(f)].append(k)
        self.num_images, self.num_cats = len(self.img_ids), len(self.cat_ids)
        C = self.num_cats
        # Federated lists as sorted arrays of group keys img_idx * C + cat_idx.
        self.neg_keys = self._key_lists(imgs, "neg_category_ids")
        self.nel_keys = self._key_lists(imgs, "not_exhaustive_category_ids")

        # Annotations kept by lvis: known image and category, 0 < area < inf.
        a_img = _int_array(_column(anns, "image_id", name, "annotations"), name, "annotations[].image_id")
        a_cat = _int_array(_column(anns, "category_id", name, "annotations"), name,
                           "annotations[].category_id")
        areas = _column(anns, "area", name, "annotations")
        try:
            a_area = np.asarray(areas, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: annotations[].area must be numbers") from None
        img_idx, img_ok = self.image_index(a_img)
        cat_idx, cat_ok = self.category_index(a_cat)
        keep = img_ok & cat_ok & (a_area > 0) & (a_area < np.inf)
        pos = np.flatnonzero(keep)
        key = img_idx[pos] * C + cat_idx[pos]
        order = np.argsort(key, kind="stable")  # group by (image, category), file order inside
        self.ann_pos = pos[order]  # position in data["annotations"]
        self.key = key[order]
        self.img_idx = img_idx[self.ann_pos]
        self.cat_idx = cat_idx[self.ann_pos]
        self.area = a_area[self.ann_pos]
        kept = [anns[i] for i in self.ann_pos]
        self.anns = kept
        self.ignore = np.fromiter((bool(a.get("ignore", 0)) for a in kept), dtype=bool, count=len(kept))
        ids = _column(kept, "id", name, "annotations")
        self.id_nonzero = np.asarray([i != 0 for i in ids], dtype=bool)
        # ignore flag per area range: [num_gt, A]
        self.ig_area = (self.ignore[:, None] | (self.area[:, None] < AREA_RNG[None, :, 0])
                        | (self.area[:, None] > AREA_RNG[None, :, 1]))
        # number of non-ignored GT per (category, area range)
        self.num_gt = np.zeros((C, len(AREA_RNG)), dtype=np.int64)
        for a in range(len(AREA_RNG)):
            self.num_gt[:, a] = np.bincount(self.cat_idx[~self.ig_area[:, a]], minlength=C)
        self.pos_keys = np.unique(self.key)
        self._rle_cache: dict[int, dict] = {}
        self._box_cache: np.ndarray | None = None

    def _key_lists(self, imgs: list, field: str) -> np.ndarray:
        lists = _column(imgs, field, self.name, "images")
        lens = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
        flat = [c for v in lists for c in v]
        if not flat:
            return np.zeros(0, dtype=np.int64)
        cats = _int_array(flat, self.name, f"images[].{field}[]")
        cidx, ok = self.category_index(cats)
        iidx = np.repeat(np.arange(len(lists), dtype=np.int64), lens)
        return np.unique(iidx[ok] * self.num_cats + cidx[ok])

    @staticmethod
    def _index(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.searchsorted(sorted_ids, values)
        idx_c = np.minimum(idx, max(len(sorted_ids) - 1, 0))
        ok = (idx < len(sorted_ids)) & (sorted_ids[idx_c] == values) if len(sorted_ids) else \
            np.zeros(len(values), dtype=bool)
        return idx_c.astype(np.int64), ok

    def image_index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._index(self.img_ids, ids)

    def category_index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._index(self.cat_ids, ids)

    def boxes(self) -> np.ndarray:
        if self._box_cache is None:
            boxes = _column(self.anns, "bbox", self.name, "annotations")
            try:
                arr = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), 4)
            except (TypeError, ValueError):
                raise ValueError(f"{self.name}: annotations[].bbox must be [x, y, w, h]") from None
            self._box_cache = arr
        return self._box_cache

    def rles(self, idx: np.ndarray) -> list[dict]:
        out = []
        for i in idx.tolist():
            rle = self._rle_cache.get(i)
            if rle is None:
                ann = self.anns[i]
                if "segmentation" not in ann:
                    raise ValueError(f"{self.name}: annotation id {ann.get('id')!r} has no 'segmentation'")
                k = int(self.img_idx[i])
                rle = _to_rle(ann["segmentation"], self.heights[k], self.widths[k])
                self._rle_cache[i] = rle
            out.append(rle)
        return out


class _Detections:
    """The results after lvis's 300-per-image cap and filters, sorted by group then score."""

    def __init__(self, res: list, gt: _GroundTruth, name: str, max_dets: int, need_segm: bool):
        self.name = name
        n = len(res)
        self.num_input = n
        if n == 0:
            self._empty()
            return
        img = _int_array(_column(res, "image_id", name, "results"), name, "results[].image_id")
        cat = _int_array(_column(res, "category_id", name, "results"), name, "results[].category_id")
        scores = _column(res, "score", name, "results")
        try:
            score = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: results[].score must be numbers") from None
        if score.ndim != 1:
            raise ValueError(f"{name}: results[].score must be numbers")
        img_idx, ok = gt.image_index(img)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"{name}: results[{i}] has image_id={int(img[i])}, not an image of the "
                             f"ground truth {gt.name}")
        cat_idx, ok = gt.category_index(cat)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"{name}: results[{i}] has category_id={int(cat[i])}, not a category of "
                             f"the ground truth {gt.name}")
        if need_segm:
            for i, r in enumerate(res):
                if "segmentation" not in r:
                    raise ValueError(f"{name}: results[{i}] has no 'segmentation' (needed for segm)")
        orig = np.arange(n, dtype=np.int64)
        # LVISResults.limit_dets_per_image: per image the top max_dets by score (stable).
        if max_dets >= 0:
            o = np.lexsort((orig, -score, img_idx))
            sorted_img = img_idx[o]
            starts = np.flatnonzero(np.r_[True, sorted_img[1:] != sorted_img[:-1]])
            run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
            rank = np.arange(n) - run_start
            keep = np.zeros(n, dtype=bool)
            keep[o[rank < max_dets]] = True
            # The first result after the cap (lvis decides bbox vs mask area on it).
            first_img = img_idx[0]
            n_first = int(np.count_nonzero(img_idx == first_img))
            if n_first <= max_dets:
                first = 0
            else:
                first = int(o[starts[np.searchsorted(sorted_img[starts], first_img)]])
        else:
            keep = np.ones(n, dtype=bool)
            first = 0
        self.first_has_bbox = isinstance(res[first], dict) and "bbox" in res[first]
        kept = np.flatnonzero(keep)
        kres = [res[i] for i in kept]
        img_idx, cat_idx, score = img_idx[kept], cat_idx[kept], score[kept]
        # Boxes and areas as LVISResults sets them.
        if self.first_has_bbox:
            boxes = _column(kres, "bbox", name, "results")
            try:
                box = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), 4)
            except (TypeError, ValueError):
                bad = next((int(i) for i, b in zip(kept, boxes) if not (
                    isinstance(b, (list, tuple)) and len(b) == 4
                    and all(isinstance(v, (int, float)) for v in b))), int(kept[0]))
                raise ValueError(f"{name}: results[{bad}] has bbox={res[bad]['bbox']!r}, "
                                 "not [x, y, w, h]") from None
            area = box[:, 2] * box[:, 3]
        else:
            # lvis: area = maskUtils.area(segmentation), bbox = maskUtils.toBbox(segmentation)
            for i, r in zip(kept, kres):
                if "segmentation" not in r:
                    raise ValueError(f"{name}: results[{i}] has neither 'bbox' nor 'segmentation'")
            rles = [_to_rle(r["segmentation"], gt.heights[k], gt.widths[k])
                    for r, k in zip(kres, img_idx.tolist())]
            area = np.asarray(mask_utils.area(rles), dtype=np.float64).reshape(-1)
            box = np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(-1, 4)
            has_box = [i for i, r in enumerate(kres) if "bbox" in r]
            if has_box:
                box[has_box] = np.asarray([kres[i]["bbox"] for i in has_box], dtype=np.float64)
        key = img_idx * gt.num_cats + cat_idx
        # get_ann_ids' open area range, then the federated filter (positive set or negative list).
        ok = (area > 0) & (area < np.inf)
        ok &= np.isin(key, gt.pos_keys) | np.isin(key, gt.neg_keys)
        sel = np.flatnonzero(ok)
        orig = kept[sel]
        key, img_idx, cat_idx, score, area, box = key[sel], img_idx[sel], cat_idx[sel], score[sel], \
            area[sel], box[sel]
        # group order: (image, category), then score descending, then result order
        o = np.lexsort((orig, -score, key))
        self.res = res
        self.orig, self.key, self.img_idx, self.cat_idx = orig[o], key[o], img_idx[o], cat_idx[o]
        self.score, self.area, self.box = score[o], area[o], box[o]
        self.not_exhaustive = np.isin(self.key, gt.nel_keys)
        self.gt = gt

    def _empty(self) -> None:
        z = np.zeros(0, dtype=np.int64)
        self.orig = self.key = self.img_idx = self.cat_idx = z
        self.score = self.area = np.zeros(0)
        self.box = np.zeros((0, 4))
        self.not_exhaustive = np.zeros(0, dtype=bool)
        self.res = []

    def __len__(self) -> int:
        return len(self.key)

    def rles(self, idx: np.ndarray) -> list[dict]:
        gt = self.gt
        out = []
        for i in idx.tolist():
            j = int(self.orig[i])
            s = self.res[j]["segmentation"]
            k = int(self.img_idx[i])
            h, w = gt.heights[k], gt.widths[k]
            if isinstance(s, dict):
                size = s.get("size")
                if size is None or "counts" not in s:
                    raise ValueError(f"{self.name}: results[{j}] segmentation is not an RLE "
                                     "(needs 'size' and 'counts')")
                if list(size) != [h, w]:
                    raise ValueError(
                        f"{self.name}: results[{j}] segmentation size={list(size)} differs from "
                        f"image {int(gt.img_ids[k])}'s [height, width]={[h, w]}")
                if not isinstance(s["counts"], list):
                    out.append(s)
                    continue
            elif not isinstance(s, list):
                raise ValueError(f"{self.name}: results[{j}] segmentation must be an RLE or polygons")
            out.append(_to_rle(s, h, w))
        return out


# --------------------------------------------------------------------------------------------
# IoU
# --------------------------------------------------------------------------------------------
def _bbox_iou_pairs(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """pycocotools ``bbIou`` (no crowd) for aligned rows of ``d`` and ``g``, same float ops."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    union = d[:, 2] * d[:, 3] + g[:, 2] * g[:, 3] - inter
    ok = (w > 0) & (h > 0)
    out = np.zeros(len(d))
    np.divide(inter, union, out=out, where=ok)
    return out


class _Groups:
    """(image, category) groups having both detections and GTs, with their IoU blocks."""

    def __init__(self, gt: _GroundTruth, dt: _Detections):
        gk, gs, gc = np.unique(gt.key, return_index=True, return_counts=True)
        dk, ds, dc = np.unique(dt.key, return_index=True, return_counts=True)
        _, gi, di = np.intersect1d(gk, dk, assume_unique=True, return_indices=True)
        self.gs, self.G = gs[gi].astype(np.int64), gc[gi].astype(np.int64)
        self.ds, self.D = ds[di].astype(np.int64), dc[di].astype(np.int64)
        self.n = len(gi)
        sizes = self.D * self.G
        self.pair_off = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        # rows = detections of these groups, each a run of G IoUs in pair space
        self.row_grp = np.repeat(np.arange(self.n, dtype=np.int64), self.D)
        row_first = np.r_[0, np.cumsum(self.D)[:-1]].astype(np.int64)
        self.row_loc = np.arange(len(self.row_grp), dtype=np.int64) - row_first[self.row_grp]
        self.row_dt = self.ds[self.row_grp] + self.row_loc
        self.row_G = self.G[self.row_grp]
        self.row_pair = self.pair_off[self.row_grp] + self.row_loc * self.row_G

    def pair_index(self) -> tuple[np.ndarray, np.ndarray]:
        total = int(self.pair_off[-1])
        prow = np.repeat(np.arange(len(self.row_grp), dtype=np.int64), self.row_G)
        g_loc = np.arange(total, dtype=np.int64) - self.row_pair[prow]
        return self.row_dt[prow], self.gs[self.row_grp[prow]] + g_loc

    def ious(self, gt: _GroundTruth, dt: _Detections, iou_type: str) -> np.ndarray:
        total = int(self.pair_off[-1])
        if total == 0:
            return np.zeros(0)
        if iou_type == "bbox":
            pdt, pgt = self.pair_index()
            return _bbox_iou_pairs(dt.box[pdt], gt.boxes()[pgt])
        out = np.empty(total)
        for j in range(self.n):
            ds, D, gs, G = int(self.ds[j]), int(self.D[j]), int(self.gs[j]), int(self.G[j])
            d_rles = dt.rles(np.arange(ds, ds + D))
            g_rles = gt.rles(np.arange(gs, gs + G))
            block = mask_utils.iou(d_rles, g_rles, [0] * G)
            out[self.pair_off[j]:self.pair_off[j + 1]] = np.asarray(block, dtype=np.float64).reshape(-1)
        return out


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------
def _match(groups: _Groups, iou: np.ndarray, gt: _GroundTruth, n_dt: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy lvis matching for all groups, area ranges and thresholds at once.

    Returns ``dt_m`` (matched to a GT whose id is non-zero, lvis's ``dt_m != 0``) and
    ``dt_ig_m`` (matched to an ignored GT), both bool ``[A, T, n_dt]``.
    """
    A, T = len(AREA_RNG), len(IOU_THRS)
    dt_m = np.zeros((n_dt, A, T), dtype=bool)
    dt_ig = np.zeros((n_dt, A, T), dtype=bool)
    if len(iou) == 0:
        return dt_m.transpose(1, 2, 0), dt_ig.transpose(1, 2, 0)
    row_max = np.maximum.reduceat(iou, groups.row_pair)
    rows = np.flatnonzero(row_max >= _THR_EFF[0])  # others match nothing at any threshold
    if len(rows) == 0:
        return dt_m.transpose(1, 2, 0), dt_ig.transpose(1, 2, 0)
    r_grp = groups.row_grp[rows]
    # rank of each matchable row inside its group (rows are in group, then score order)
    grp_first = np.flatnonzero(np.r_[True, r_grp[1:] != r_grp[:-1]])
    r_rank = np.arange(len(rows)) - np.repeat(grp_first, np.diff(np.r_[grp_first, len(rows)]))
    m_count = np.bincount(r_grp, minlength=groups.n)
    Gp_grp = 1 << np.ceil(np.log2(np.maximum(groups.G, 1))).astype(np.int64)
    thr = _THR_EFF[None, None, :, None]
    a_idx = np.arange(A)[None, :, None]
    for Gp in np.unique(Gp_grp[m_count > 0]).tolist():
        grp = np.flatnonzero((Gp_grp == Gp) & (m_count > 0))
        grp = grp[np.argsort(-m_count[grp], kind="stable")]
        B = len(grp)
        bpos = np.full(groups.n, -1, dtype=np.int64)
        bpos[grp] = np.arange(B)
        counts = m_count[grp]
        Mmax = int(counts[0])
        sel = np.flatnonzero(bpos[r_grp] >= 0)
        s_rows, s_b, s_k = rows[sel], bpos[r_grp[sel]], r_rank[sel]
        s_G = groups.row_G[s_rows]
        # IoUs [B, Mmax, Gp], -1 = padding
        ious = np.full((B, Mmax, Gp), -1.0)
        e_row = np.repeat(np.arange(len(sel)), s_G)
        e_l = np.arange(len(e_row)) - np.repeat(np.r_[0, np.cumsum(s_G)[:-1]], s_G)
        ious[s_b[e_row], s_k[e_row], e_l] = iou[groups.row_pair[s_rows][e_row] + e_l]
        # GT ignore per area range [B, A, Gp] and id != 0 [B, Gp]
        G = groups.G[grp]
        g_b = np.repeat(np.arange(B), G)
        g_l = np.arange(len(g_b)) - np.repeat(np.r_[0, np.cumsum(G)[:-1]], G)
        g_idx = groups.gs[grp][g_b] + g_l
        g_ig = np.ones((B, A, Gp), dtype=bool)
        g_ig[g_b, :, g_l] = gt.ig_area[g_idx]
        g_nz = np.zeros((B, Gp), dtype=bool)
        g_nz[g_b, g_l] = gt.id_nonzero[g_idx]
        g_used = np.zeros((B, A, T, Gp), dtype=bool)
        out_m = np.zeros((B, Mmax, A, T), dtype=bool)
        out_ig = np.zeros((B, Mmax, A, T), dtype=bool)
        out_nz = np.zeros((B, Mmax, A, T), dtype=bool)
        # number of groups with more than k matchable rows: counts are sorted descending
        active = B - np.searchsorted(counts[::-1], np.arange(Mmax), side="right")
        for k in range(Mmax):
            nb = int(active[k])
            used = g_used[:nb]
            ig = g_ig[:nb, :, None, :]
            iou_k = ious[:nb, k, None, None, :]
            cand = ~used & (iou_k >= thr)
            reg = cand & ~ig
            has_reg = reg.any(-1)
            chosen = np.where(has_reg[..., None], reg, cand & ig)
            matched = chosen.any(-1)
            v = np.where(chosen, iou_k, -1.0)
            m = Gp - 1 - np.argmax(v[..., ::-1], axis=-1)  # last of the equal maxima, as lvis
            mi = m[..., None]
            bi = np.arange(nb)[:, None, None]
            out_m[:nb, k] = matched
            out_ig[:nb, k] = g_ig[bi, a_idx, m] & matched
            out_nz[:nb, k] = g_nz[bi, m] & matched
            cur = np.take_along_axis(used, mi, -1)
            np.put_along_axis(used, mi, cur | matched[..., None], -1)
        d_idx = groups.row_dt[s_rows]
        dt_m[d_idx] = out_nz[s_b, s_k]
        dt_ig[d_idx] = out_ig[s_b, s_k]
    return dt_m.transpose(1, 2, 0), dt_ig.transpose(1, 2, 0)


# --------------------------------------------------------------------------------------------
# accumulate + summarize
# --------------------------------------------------------------------------------------------
def _sorted_tp_fp(dt: _Detections, dt_m: np.ndarray, dt_ig_m: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lvis's detection order for accumulate (category, score descending, image, result
    order) and the TP and FP flags ``[A, T, n]`` in that order, after the ignore rules."""
    # unmatched detections out of the area range or of a not-exhaustive category are ignored
    ig_mask = ((dt.area[None, :] < AREA_RNG[:, 0, None]) | (dt.area[None, :] > AREA_RNG[:, 1, None])
               | dt.not_exhaustive[None, :])  # [A, n]
    dt_ig = dt_ig_m | (~dt_m & ig_mask[:, None, :])
    order = np.lexsort((dt.orig, dt.img_idx, -dt.score, dt.cat_idx))
    return order, (dt_m & ~dt_ig)[:, :, order], (~dt_m & ~dt_ig)[:, :, order]


def _match_table(gt: _GroundTruth, dt: _Detections, order: np.ndarray, tps: np.ndarray,
                 fps: np.ndarray):
    """The area-'all' matches of one iou type as a bootstrap ``MatchTable``."""
    from seesaw_lvis.evaluation.bootstrap import MatchTable  # it imports this module

    keep = ~gt.ig_area[:, 0]
    freq = np.zeros(gt.num_cats, dtype=np.int64)
    for g, cats in enumerate(gt.freq_groups):
        freq[cats] = g
    return MatchTable(det_cat=dt.cat_idx[order], det_img=dt.img_idx[order],
                      tp=tps[0].copy(), fp=fps[0].copy(),
                      gt_cat=gt.cat_idx[keep], gt_img=gt.img_idx[keep], num_images=gt.num_images,
                      cat_ids=gt.cat_ids.copy(), freq=freq)


def _accumulate(gt: _GroundTruth, dt: _Detections, dt_m: np.ndarray, dt_ig_m: np.ndarray,
                sorted_tp_fp: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """lvis ``accumulate``: precision ``[T, R, K, A]`` and recall ``[T, K, A]`` (-1 where a
    category has no non-ignored GT). ``sorted_tp_fp``: ``_sorted_tp_fp``'s result, if made."""
    A, T, R, K = len(AREA_RNG), len(IOU_THRS), len(REC_THRS), gt.num_cats
    precision = -np.ones((T, R, K, A))
    recall = -np.ones((T, K, A))
    n = len(dt)
    order, tps, fps = _sorted_tp_fp(dt, dt_m, dt_ig_m) if sorted_tp_fp is None else sorted_tp_fp
    cats = dt.cat_idx[order]
    bounds = np.searchsorted(cats, np.arange(K + 1)) if n else np.zeros(K + 1, dtype=np.int64)
    eps = np.spacing(1)
    for c in np.flatnonzero((gt.num_gt > 0).any(1)).tolist():
        s, e = int(bounds[c]), int(bounds[c + 1])
        num = e - s
        if num == 0:
            for a in np.flatnonzero(gt.num_gt[c] > 0).tolist():
                precision[:, :, c, a] = 0.0
                recall[:, c, a] = 0.0
            continue
        tp_sum = np.cumsum(tps[:, :, s:e], axis=2).astype(np.float64)
        fp_sum = np.cumsum(fps[:, :, s:e], axis=2).astype(np.float64)
        for a in np.flatnonzero(gt.num_gt[c] > 0).tolist():
            num_gt = int(gt.num_gt[c, a])
            tp, fp = tp_sum[a], fp_sum[a]
            rc = tp / num_gt
            recall[:, c, a] = rc[:, -1]
            pr = tp / (fp + tp + eps)
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(T):
                idx = np.searchsorted(rc[t], REC_THRS, side="left")
                valid = idx < num
                q = np.zeros(R)
                q[valid] = pr[t, idx[valid]]
                precision[t, :, c, a] = q
    return precision, recall


def _summarize(precision: np.ndarray, freq_groups: list[list[int]], iou_thr: float | None = None,
               area_rng: str = "all", freq_group_idx: int | None = None,
               recall: np.ndarray | None = None) -> float | None:
    """lvis ``_summarize('ap' or, with ``recall``, 'ar', ...)``, None for its -1."""
    aidx = [i for i, lbl in enumerate(AREA_LBL) if lbl == area_rng]
    if recall is not None:
        s = recall[:, :, aidx]
    else:
        s = precision
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRS)[0]]
        if freq_group_idx is not None:
            s = s[:, :, freq_groups[freq_group_idx], aidx]
        else:
            s = s[:, :, :, aidx]
    v = s[s > -1]
    return None if len(v) == 0 else float(np.mean(v))


def _metrics(precision: np.ndarray, recall: np.ndarray, gt: _GroundTruth) -> dict:
    fg = gt.freq_groups
    out: dict[str, Any] = {
        "AP": _summarize(precision, fg),
        "AP50": _summarize(precision, fg, iou_thr=0.50),
        "AP75": _summarize(precision, fg, iou_thr=0.75),
        "APs": _summarize(precision, fg, area_rng="small"),
        "APm": _summarize(precision, fg, area_rng="medium"),
        "APl": _summarize(precision, fg, area_rng="large"),
        "APr": _summarize(precision, fg, freq_group_idx=0),
        "APc": _summarize(precision, fg, freq_group_idx=1),
        "APf": _summarize(precision, fg, freq_group_idx=2),
        # lvis's names, with its fixed Params.max_dets = 300
        "AR@300": _summarize(precision, fg, recall=recall),
        "ARs@300": _summarize(precision, fg, area_rng="small", recall=recall),
        "ARm@300": _summarize(precision, fg, area_rng="medium", recall=recall),
        "ARl@300": _summarize(precision, fg, area_rng="large", recall=recall),
    }
    per_class = {}
    for k, cid in enumerate(gt.cat_ids.tolist()):
        p = precision[:, :, k, 0]
        p = p[p > -1]
        per_class[str(cid)] = float(np.mean(p)) if p.size else None
    out["per_class"] = per_class
    return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _iou_types(iou_types: str | Iterable[str]) -> tuple[str, ...]:
    types = (iou_types,) if isinstance(iou_types, str) else tuple(iou_types)
    if not types:
        raise ValueError("iou_types is empty: give 'bbox' and/or 'segm'")
    for t in types:
        if t not in IOU_TYPES:
            raise ValueError(f"iou_type {t!r} is not supported: use 'bbox' or 'segm'")
    return types


def _evaluate(gt_src: Any, res_src: Any, iou_types: str | Iterable[str], max_dets: int,
              matches: bool = False) -> tuple:
    """``(metrics, num_images, num_results)``, plus ``{iou_type: MatchTable}`` last if
    ``matches``."""
    types = _iou_types(iou_types)
    gt_name = _name_of(gt_src, "<ground-truth dict>")
    res_name = _name_of(res_src, "<results list>")
    gt = _GroundTruth(_load(gt_src, "ground truth", dict), gt_name)
    res = _load(res_src, "results", list)
    dt = _Detections(res, gt, res_name, max_dets, need_segm="segm" in types)
    groups = _Groups(gt, dt)
    out, tables = {}, {}
    for t in types:
        iou = groups.ious(gt, dt, t)
        dt_m, dt_ig = _match(groups, iou, gt, len(dt))
        sorted_tp_fp = _sorted_tp_fp(dt, dt_m, dt_ig)
        precision, recall = _accumulate(gt, dt, dt_m, dt_ig, sorted_tp_fp)
        out[t] = _metrics(precision, recall, gt)
        if matches:
            tables[t] = _match_table(gt, dt, *sorted_tp_fp)
    if matches:
        return out, gt.num_images, len(res), tables
    return out, gt.num_images, len(res)


def evaluate(gt: str | os.PathLike | dict, results: str | os.PathLike | list,
             iou_types: str | Sequence[str] = ("bbox", "segm"), max_dets: int = 300) -> dict:
    """LVIS v1 metrics of ``results`` against ``gt``, equal to lvis-api 0.5.3.

    ``gt``: an LVIS annotation file or its loaded dict (not modified). ``results``: a
    results file or list in the LVIS/COCO results format (``image_id``, ``category_id``,
    ``score``, ``bbox`` = [x, y, w, h], and ``segmentation`` = RLE for segm; not modified).
    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
    and lvis's "AR@300", "ARs@300", "ARm@300", "ARl@300": fraction in [0, 1] or None
    (lvis's -1), "per_class": {str(cat_id): AP or None}}}``.
    Raises ValueError, naming the file and the offending key or value, on bad input.
    """
    return _evaluate(gt, results, iou_types, max_dets)[0]


def evaluate_with_matches(gt: str | os.PathLike | dict, results: str | os.PathLike | list,
                          iou_types: str | Sequence[str] = ("bbox", "segm"), max_dets: int = 300
                          ) -> tuple[dict, dict]:
    """``evaluate``'s metrics and, from the same pass, ``{iou_type: MatchTable}``: the
    area-'all' TP/FP flags of every detection, for bootstrap confidence intervals
    (``seesaw_lvis.evaluation.bootstrap``)."""
    metrics, _, _, tables = _evaluate(gt, results, iou_types, max_dets, matches=True)
    return metrics, tables


def headline(metrics: dict) -> dict:
    """The summary numbers of an ``evaluate`` result, without ``per_class`` or ``meta``.

    What ``dvc metrics show`` lists (``results/eval/<row>/summary.json``): DVC flattens every
    number of a metrics file into a column, and per-class APs would add one per category and
    IoU type (2406 at full scale). None (lvis's -1) is kept; DVC skips it.
    """
    return {iou: {k: metrics[iou].get(k) for k in SUMMARY_KEYS}
            for iou in IOU_TYPES if iou in metrics}


def run(gt: str | os.PathLike | dict, results: str | os.PathLike | list,
        iou_types: str | Sequence[str] = ("bbox", "segm"), out: str | os.PathLike | None = None,
        max_dets: int = 300) -> dict:
    """``evaluate`` plus a ``meta`` entry, written atomically as JSON to ``out`` (if given)."""
    metrics, num_images, num_dets = _evaluate(gt, results, iou_types, max_dets)
    metrics["meta"] = {
        "gt": _name_of(gt, "<ground-truth dict>"),
        "results": _name_of(results, "<results list>"),
        "num_images": int(num_images),
        "num_detections": int(num_dets),
        "max_dets": int(max_dets),
        "evaluator": "seesaw_lvis",
    }
    if out is not None:
        write_json(out, metrics)
        log.info("LVIS metrics written: %s", out)
    return metrics
