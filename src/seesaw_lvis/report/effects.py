"""Replicates and their uncertainty: mean +- std over seeds, paired differences with bootstrap CIs.

A comparison is a distribution, not a number. Each (row, seed) is its own training run and
evaluation; for each row and metric the report gives the mean and the standard deviation
(ddof = 1) over its seeds, and for each row its paired difference against its reference row
(Table 1: the CE row, every loss against the same baseline; Table 2: the row above, the step)
with a percentile bootstrap interval that resamples both sources of noise:

* the validation images: one multinomial draw of image weights per bootstrap sample, the same
  for every row and seed (a paired design: both rows are scored on the same resampled val
  set), applied to each run's per-detection matches (``matches.<iou>.npz`` of the evaluate
  stage, :class:`seesaw_lvis.evaluation.bootstrap.MatchTable`), so no matching is re-run;
* the seeds: per bootstrap sample, the common seeds of the two rows drawn with replacement,
  the same draw for both rows (seed ``s`` of a row is paired with seed ``s`` of the other:
  the same data order and initialisation of everything the rows share).

The difference's point estimate is the mean over the common seeds of (row - reference) on the
full val set. Identical runs give a zero-width interval; a shift added to every image of one
row is recovered exactly (``tests/unit/test_effects.py``).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

# The tables' metrics, on their 0-100 scale: (name = the key of rows.yaml `paper`, iou type,
# key of MatchTable.metrics / metrics.json, column label). APr/APc/APf are mask APs, as the
# paper's; bbox APr has no paper number: it shows the rare-class effect before the masks (at
# mini, the mask heads of rare classes have seen few examples and lag their boxes).
METRICS = (
    ("bbox_AP", "bbox", "AP", "Bbox AP"),
    ("bbox_APr", "bbox", "APr", "Bbox APr"),
    ("mask_AP", "segm", "AP", "Mask AP"),
    ("APr", "segm", "APr", "APr"),
    ("APc", "segm", "APc", "APc"),
    ("APf", "segm", "APf", "APf"),
)
EFFECT_METRICS = tuple(m[:3] for m in METRICS)   # (name, iou type, key)


def _pct(v: Any) -> float:
    return float("nan") if v is None else 100.0 * float(v)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{mean, std, n_seeds}`` of one metric over seeds (std: ddof 1, None for one seed;
    None values, lvis's -1, are left out)."""
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n_seeds": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "n_seeds": int(v.size)}


def paired_difference(observed_ref: Mapping[int, float], observed_new: Mapping[int, float],
                      boot_ref: Mapping[int, np.ndarray], boot_new: Mapping[int, np.ndarray],
                      rng: np.random.Generator, level: float = 0.95) -> dict[str, Any] | None:
    """The paired difference new - ref over their common seeds, with a bootstrap interval.

    ``observed_*``: ``{seed: metric on the full val set}``; ``boot_*``: ``{seed: metric under
    each of the B image resamples}`` (the same B resamples for both rows). Per sample ``b``
    the common seeds are drawn with replacement (one draw for both rows) and the difference
    is the mean over the drawn seeds of ``boot_new[s][b] - boot_ref[s][b]``. Returns
    ``{mean, ci_low, ci_high, n_seeds, seeds}``, or None without a common seed.
    """
    seeds = sorted(set(observed_ref) & set(observed_new) & set(boot_ref) & set(boot_new))
    if not seeds:
        return None
    diffs = np.stack([np.asarray(boot_new[s], np.float64) - np.asarray(boot_ref[s], np.float64)
                      for s in seeds])                                  # [k, B]
    k, n = diffs.shape
    pick = rng.integers(0, k, size=(n, k))                              # seeds drawn per sample
    with warnings.catch_warnings():  # a resample without a rare GT leaves APr undefined (nan)
        warnings.simplefilter("ignore", RuntimeWarning)
        samples = np.nanmean(diffs[pick, np.arange(n)[:, None]], axis=1)    # [B]
        point = np.nanmean([observed_new[s] - observed_ref[s] for s in seeds])
    samples = samples[~np.isnan(samples)]
    alpha = (1.0 - level) / 2.0
    low, high = (np.quantile(samples, [alpha, 1.0 - alpha]) if samples.size else (np.nan, np.nan))
    as_float = lambda x: None if x is None or np.isnan(x) else float(x)  # noqa: E731
    return {"mean": as_float(point), "ci_low": as_float(low), "ci_high": as_float(high),
            "n_seeds": len(seeds), "seeds": seeds}


def mean_interval(observed: Mapping[int, float], boot: Mapping[int, np.ndarray], rng: np.random.Generator,
                  level: float = 0.95) -> dict[str, Any] | None:
    """A run's metric as the mean over its seeds with the bootstrap interval of that mean (val
    images and seeds resampled as for :func:`paired_difference`: its difference from zero)."""
    zero = {s: 0.0 for s in observed}
    return paired_difference(zero, observed, {s: np.zeros_like(b) for s, b in boot.items()}, boot, rng, level)


def bootstrap_metrics(match_files: Mapping[str, Path], weights: np.ndarray) -> dict[str, np.ndarray]:
    """``{metric: [B] values x100}`` of one run under each row of image ``weights`` [B, n]."""
    from seesaw_lvis.evaluation.bootstrap import MatchTable

    out: dict[str, np.ndarray] = {}
    for iou, path in match_files.items():
        table = MatchTable.load(path)
        if table.num_images != weights.shape[1]:
            raise ValueError(f"{path}: {table.num_images} val images, the other runs have {weights.shape[1]}")
        keys = [(m, k) for m, i, k in EFFECT_METRICS if i == iou]
        values = np.full((len(weights), len(keys)), np.nan)
        for b, w in enumerate(weights):
            got = table.metrics(w)
            values[b] = [_pct(got[k]) for _, k in keys]
        for j, (m, _) in enumerate(keys):
            out[m] = values[:, j]
    return out


def row_effects(rows: Sequence[Any], reference: Callable[[int], int | None],
                match_files: Callable[[str, int], Mapping[str, Path] | None],
                spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per row: ``{metrics: {m: summarize + val_se + the mean's ci_low / ci_high}, reference,
    difference: {m: paired_difference}}``.

    ``rows``: loaded rows in table order, each with ``.row``, ``.seed_values`` ({seed: {metric:
    x100}}); ``reference(i)``: the index of row i's reference row (None: none); ``match_files(
    row, seed)``: that run's ``{iou: matches file}`` (None when missing: the difference then has
    no interval). ``spec``: params' ``report`` (bootstrap_samples, ci_level, bootstrap_seed).
    """
    from seesaw_lvis.evaluation.bootstrap import MatchTable, image_weights

    rng = np.random.default_rng(spec["bootstrap_seed"])
    weights: np.ndarray | None = None
    cache: dict[tuple[str, int], dict[str, np.ndarray] | None] = {}

    def boot(row: str, seed: int) -> dict[str, np.ndarray] | None:
        nonlocal weights
        if (row, seed) not in cache:
            files = match_files(row, seed)
            if not files:
                cache[row, seed] = None
            else:
                if weights is None:  # one set of image resamples for every run
                    n_images = MatchTable.load(next(iter(files.values()))).num_images
                    weights = image_weights(n_images, spec["bootstrap_samples"], rng)
                cache[row, seed] = bootstrap_metrics(files, weights)
        return cache[row, seed]

    out: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        entry: dict[str, Any] = {"seeds": sorted(r.seed_values), "metrics": {}, "reference": None,
                                 "difference": {}}
        own = {s: boot(r.row, s) for s in sorted(r.seed_values)}
        # the row's own intervals: the same seed draws for every row (identical runs, identical
        # intervals), apart from the stream of the paired differences
        own_rng = np.random.default_rng([spec["bootstrap_seed"], 1])
        for m, *_ in EFFECT_METRICS:
            entry["metrics"][m] = summarize([v[m] for v in r.seed_values.values()])
            # the val set's own noise: the std of a run's metric over the image resamples
            # (mean over the seeds), the yardstick of "enough val instances" (params synthetic)
            ses = [float(np.nanstd(b[m], ddof=1)) for b in own.values() if b is not None and
                   np.isfinite(b[m]).sum() > 1]
            entry["metrics"][m]["val_se"] = float(np.mean(ses)) if ses else None
            have = [s for s, b in own.items() if b is not None and not np.isnan(r.seed_values[s][m])]
            iv = mean_interval({s: r.seed_values[s][m] for s in have}, {s: own[s][m] for s in have},
                               own_rng, spec["ci_level"]) if have else None
            entry["metrics"][m]["ci_low"] = iv["ci_low"] if iv else None
            entry["metrics"][m]["ci_high"] = iv["ci_high"] if iv else None
        j = reference(i)
        if j is not None and rows[j].seed_values and r.seed_values:
            ref = rows[j]
            entry["reference"] = ref.row
            common = sorted(set(ref.seed_values) & set(r.seed_values))
            boots = {(x.row, s): boot(x.row, s) for x in (ref, r) for s in common}
            for m, *_ in EFFECT_METRICS:
                ok = [s for s in common if boots[ref.row, s] is not None and boots[r.row, s] is not None]
                d = paired_difference({s: ref.seed_values[s][m] for s in ok}, {s: r.seed_values[s][m] for s in ok},
                                      {s: boots[ref.row, s][m] for s in ok}, {s: boots[r.row, s][m] for s in ok},
                                      rng, spec["ci_level"])
                if d is None and common:  # no matches files: the point estimate alone
                    diffs = [r.seed_values[s][m] - ref.seed_values[s][m] for s in common]
                    d = {"mean": summarize(diffs)["mean"], "ci_low": None, "ci_high": None,
                         "n_seeds": len(common), "seeds": common}
                entry["difference"][m] = d
        out[r.row] = entry
    return out
