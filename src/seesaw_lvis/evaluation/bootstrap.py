"""Bootstrap confidence intervals for LVIS AP: resample validation images, match once.

Why: the AP of a model on a fixed validation set is an estimate, and its spread over image
sets drawn with replacement from that set (the bootstrap) gives a confidence interval, the
unit of resampling being the image. Re-running lvis's matching for each of thousands of
resamples would cost minutes each, but a detection's TP/FP flag depends only on its own
image, so the matching is done once (``lvis_eval.evaluate_with_matches`` gives a
``MatchTable``) and a resample is a vector of image weights: w_i = how many times image i
is drawn (``image_weights``).

``MatchTable.metrics(w)`` is lvis's accumulate with cumulative TP/FP sums weighted by the
weight of each detection's image and num_gt per category = the summed weights of its GTs'
images. This equals lvis's accumulate over the image set with image i duplicated w_i times,
up to the order of tied scores: the w copies of a detection are adjacent in lvis's score
order, so duplication only adds points inside runs of copies. Along a run of TP copies
precision rises, so lvis's precision envelope (the max to the right) there is its value at
the run's end, the weighted point; along a run of FP copies recall is flat and lvis's
``searchsorted(side='left')`` on recall never lands inside it.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seesaw_lvis.evaluation.lvis_eval import FREQ_LBL, IOU_THRS, REC_THRS

__all__ = ["MatchTable", "image_weights"]

_ARRAYS = ("det_cat", "det_img", "tp", "fp", "gt_cat", "gt_img", "cat_ids", "freq")
_GROUP_KEYS = tuple(f"AP{f}" for f in FREQ_LBL)  # APr, APc, APf: freq 0, 1, 2


@dataclass(eq=False)
class MatchTable:
    """The area-'all' matches of one iou type, detections in lvis's accumulate order
    (category, score descending, image, result order).

    ``det_cat``, ``det_img``: category and image index of each detection ``[n]``; ``tp``,
    ``fp``: bool ``[T=10, n]`` after lvis's ignore rules (TP = matched and not ignored, FP =
    unmatched and not ignored); ``gt_cat``, ``gt_img``: one entry per non-ignored GT;
    ``num_images``; ``cat_ids`` ``[K]``; ``freq`` ``[K]``: 0 rare, 1 common, 2 frequent.
    Read-only once made (``metrics`` caches indices derived from it).
    """

    det_cat: np.ndarray
    det_img: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    gt_cat: np.ndarray
    gt_img: np.ndarray
    num_images: int
    cat_ids: np.ndarray
    freq: np.ndarray
    _cache: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        for k in ("det_cat", "det_img", "gt_cat", "gt_img", "cat_ids", "freq"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.int64).reshape(-1))
        self.tp, self.fp = np.asarray(self.tp, dtype=bool), np.asarray(self.fp, dtype=bool)
        self.num_images = int(self.num_images)
        n, K, T = len(self.det_cat), len(self.cat_ids), len(IOU_THRS)
        if self.tp.shape != (T, n) or self.fp.shape != (T, n) or len(self.det_img) != n:
            raise ValueError(f"tp, fp must be [{T}, n] and det_img [n] for n={n} detections, got "
                             f"{self.tp.shape}, {self.fp.shape}, {self.det_img.shape}")
        if len(self.gt_img) != len(self.gt_cat) or len(self.freq) != K:
            raise ValueError("gt_img must match gt_cat, and freq cat_ids, in length")
        if np.any(self.tp & self.fp):
            raise ValueError("a detection cannot be both TP and FP at one IoU threshold")
        if np.any(np.diff(self.det_cat) < 0):
            raise ValueError("det_cat must be sorted (lvis's accumulate order)")
        for k, hi in (("det_cat", K), ("gt_cat", K), ("det_img", self.num_images),
                      ("gt_img", self.num_images), ("freq", len(FREQ_LBL))):
            v = getattr(self, k)
            if len(v) and (v.min() < 0 or v.max() >= hi):
                raise ValueError(f"{k} has values outside [0, {hi})")

    # ---------------------------------------------------------------------------- metrics
    def _layout(self) -> dict:
        """Weight-independent indices, made on first use. Only TP entries (iou thr t,
        detection j) are kept: precision falls along FPs and recall is flat there, so lvis's
        envelope max and its recall thresholds are all reached at TPs (or at rank 0, where
        the envelope is the category's max, also a TP's or 0)."""
        if not self._cache:
            T, n, K = len(IOU_THRS), len(self.det_cat), len(self.cat_ids)
            bounds = np.searchsorted(self.det_cat, np.arange(K + 1))
            t, j = np.nonzero(self.tp)  # by thr, then in accumulate order
            lane = t * K + self.det_cat[j]  # (thr, category) lane of each TP, sorted
            first = np.searchsorted(lane, np.arange(T * K + 1))  # each lane's first TP
            start = bounds[self.det_cat[j]]  # its category's first detection
            ig_t, ig_j = np.nonzero(~self.tp & ~self.fp)  # ignored (thr, detection)
            ig_key = ig_t * n + ig_j
            self._cache.update(
                j=j, lane=lane, lane_start=first[lane], start=start, ig_j=ig_j,
                first=first[:-1].reshape(T, K, 1), count=np.diff(first).reshape(T, K, 1),
                ig_hi=np.searchsorted(ig_key, t * n + j, side="right"),  # ignored up to j
                ig_lo=np.searchsorted(ig_key, t * n + start, side="left"))  # ... before start
        return self._cache

    def metrics(self, weights: np.ndarray | None = None) -> dict:
        """AP, APr, APc, APf (fractions; None where no category of the group has positive
        weighted GT, lvis's -1) and ``per_class`` ``[K]`` (nan for such categories) of the
        image set in which image i appears ``weights[i]`` times (default: once each)."""
        T, K, R = len(IOU_THRS), len(self.cat_ids), len(REC_THRS)
        if weights is None:
            w = np.ones(self.num_images)
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (self.num_images,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"weights must be {self.num_images} finite values >= 0, "
                                 f"got shape {w.shape}")
        L = self._layout()
        j = L["j"]
        num_gt = np.bincount(self.gt_cat, weights=w[self.gt_img], minlength=K)
        wd = w[self.det_img]
        # weighted cumulative sums at each TP, restarted per category (exact for integer
        # weights): TPs over the lane's TPs; TP + FP = all detections less the ignored ones
        cum = np.r_[0.0, np.cumsum(wd)]
        cum_tp = np.r_[0.0, np.cumsum(wd[j])]
        cum_ig = np.r_[0.0, np.cumsum(wd[L["ig_j"]])]
        tp = cum_tp[1:] - cum_tp[L["lane_start"]]
        fp = (cum[j + 1] - cum[L["start"]]) - (cum_ig[L["ig_hi"]] - cum_ig[L["ig_lo"]]) - tp
        rc = tp / np.where(num_gt > 0, num_gt, np.inf)[self.det_cat[j]]
        pr = tp / (fp + tp + np.spacing(1))
        # lvis: idx = searchsorted(rc, REC_THRS, 'left') = #{rc < thr}, per (thr, category):
        # a TP counts for the recall thresholds above its number of thresholds <= rc
        k = np.searchsorted(REC_THRS, rc, side="right")
        hist = np.bincount(L["lane"] * (R + 1) + k, minlength=T * K * (R + 1))
        idx = np.cumsum(hist.reshape(T, K, R + 1), axis=2)[:, :, :R]  # [T, K, R]
        valid = idx < L["count"]
        # envelope at idx = max(pr[idx:lane end]): the max of each block between consecutive
        # queries (one reduceat), then the max to the right over the R blocks
        q = np.maximum.reduceat(np.r_[pr, 0.0], (L["first"] + idx).reshape(-1))
        q = np.where(valid, q.reshape(T, K, R), 0.0)
        q = np.maximum.accumulate(q[:, :, ::-1], axis=2)[:, :, ::-1]  # invalid: a 0 suffix
        has_gt = num_gt > 0
        per_class = np.full(K, np.nan)
        per_class[has_gt] = q[:, has_gt].mean(axis=(0, 2))
        out: dict = {"AP": float(np.mean(per_class[has_gt])) if has_gt.any() else None}
        for g, key in enumerate(_GROUP_KEYS):
            sel = has_gt & (self.freq == g)
            out[key] = float(np.mean(per_class[sel])) if sel.any() else None
        out["per_class"] = per_class
        return out

    # ------------------------------------------------------------------------------- file
    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as a compressed ``.npz``, atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, num_images=np.int64(self.num_images),
                                    **{k: getattr(self, k) for k in _ARRAYS})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MatchTable":
        """Read a table written by ``save``; ValueError naming the file if it is bad."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: match table file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in (*_ARRAYS, "num_images") if k not in z.files]
                if missing:
                    raise ValueError(f"missing key(s) {', '.join(missing)}")
                data = {k: z[k] for k in (*_ARRAYS, "num_images")}
            return cls(**{**data, "num_images": int(data["num_images"])})
        except (ValueError, OSError, EOFError, TypeError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a valid match table: {e}") from None


def image_weights(num_images: int, n_samples: int, rng: np.random.Generator | int | None = None
                  ) -> np.ndarray:
    """Bootstrap image weights ``[n_samples, num_images]``: how many times each image is drawn
    in ``num_images`` draws with replacement (multinomial counts; each row sums to
    ``num_images``). ``rng``: a numpy Generator or a seed."""
    if num_images < 1 or n_samples < 0:
        raise ValueError(f"need num_images >= 1 and n_samples >= 0, got {num_images}, {n_samples}")
    rng = np.random.default_rng(rng)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images),
                           size=n_samples).astype(np.int64)
