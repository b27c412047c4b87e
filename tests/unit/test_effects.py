"""The report's statistics on cases with a known answer: seeds summarised, paired bootstrap CIs."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from seesaw_lvis.report import effects
from seesaw_lvis.report.effects import EFFECT_METRICS, paired_difference, row_effects, summarize


def test_summarize_mean_std_over_seeds():
    s = summarize([10.0, 12.0, 14.0])
    assert s == {"mean": 12.0, "std": pytest.approx(2.0), "n_seeds": 3}   # ddof = 1
    assert summarize([7.5]) == {"mean": 7.5, "std": None, "n_seeds": 1}     # one seed: no spread
    assert summarize([float("nan"), None, 3.0]) == {"mean": 3.0, "std": None, "n_seeds": 1}
    assert summarize([]) == {"mean": None, "std": None, "n_seeds": 0}


def _per_image_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A metric that is the weighted mean of per-image scores, under each weight row."""
    return (weights * values[None, :]).sum(1) / weights.sum(1)


def _weights(n_images: int, n_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_samples).astype(float)


def test_identical_runs_give_a_zero_width_interval():
    rng = np.random.default_rng(1)
    per_image = {s: rng.uniform(0, 50, 200) for s in (0, 1, 2)}
    w = _weights(200, 500)
    boot = {s: _per_image_mean(v, w) for s, v in per_image.items()}
    obs = {s: float(v.mean()) for s, v in per_image.items()}
    d = paired_difference(obs, dict(obs), boot, dict(boot), np.random.default_rng(0))
    assert d["mean"] == 0.0 and d["ci_low"] == 0.0 and d["ci_high"] == 0.0
    assert d["n_seeds"] == 3 and d["seeds"] == [0, 1, 2]


def test_a_planted_constant_shift_is_recovered_exactly():
    rng = np.random.default_rng(2)
    w = _weights(150, 400)
    ref = {s: rng.uniform(0, 40, 150) for s in (0, 1, 2)}
    new = {s: v + 5.0 for s, v in ref.items()}           # +5 on every image of every seed
    d = paired_difference({s: v.mean() for s, v in ref.items()}, {s: v.mean() for s, v in new.items()},
                          {s: _per_image_mean(v, w) for s, v in ref.items()},
                          {s: _per_image_mean(v, w) for s, v in new.items()}, np.random.default_rng(0))
    assert d["mean"] == pytest.approx(5.0) and d["ci_low"] == pytest.approx(5.0) and d["ci_high"] == pytest.approx(5.0)


def test_a_noisy_shift_is_covered_and_separated_from_zero():
    """new = ref + 2 + image noise: the 95% interval holds 2 and excludes 0; its width is
    what the per-image noise predicts (1.96 * 2 * sd / sqrt(n))."""
    rng = np.random.default_rng(3)
    n, sd = 400, 3.0
    w = _weights(n, 2000, seed=4)
    ref = {0: rng.uniform(0, 40, n)}
    new = {0: ref[0] + 2.0 + rng.normal(0, sd, n)}
    d = paired_difference({0: ref[0].mean()}, {0: new[0].mean()}, {0: _per_image_mean(ref[0], w)},
                          {0: _per_image_mean(new[0], w)}, np.random.default_rng(0))
    assert d["ci_low"] < 2.0 < d["ci_high"] and d["ci_low"] > 0
    half = (d["ci_high"] - d["ci_low"]) / 2
    assert half == pytest.approx(1.96 * sd / np.sqrt(n), rel=0.15)


def test_seed_resampling_widens_the_interval_when_seeds_disagree():
    """Two seeds whose differences are +1 and +9 with no image noise: the interval spans the
    seeds' spread (draws of {+1,+1}, {+1,+9}, {+9,+9}), not just the image noise."""
    w = _weights(50, 3000)
    ref = {0: np.zeros(50), 1: np.zeros(50)}
    new = {0: np.full(50, 1.0), 1: np.full(50, 9.0)}
    d = paired_difference({s: v.mean() for s, v in ref.items()}, {s: v.mean() for s, v in new.items()},
                          {s: _per_image_mean(v, w) for s, v in ref.items()},
                          {s: _per_image_mean(v, w) for s, v in new.items()}, np.random.default_rng(0))
    assert d["mean"] == pytest.approx(5.0)
    assert d["ci_low"] == pytest.approx(1.0) and d["ci_high"] == pytest.approx(9.0)


def test_only_common_seeds_are_paired():
    w = _weights(20, 100)
    v = np.arange(20.0)
    ref = {0: v, 1: v}
    new = {1: v + 3.0, 2: v + 100.0}          # seed 2 has no partner, seed 0 none either
    boot = lambda d: {s: _per_image_mean(x, w) for s, x in d.items()}  # noqa: E731
    d = paired_difference({s: x.mean() for s, x in ref.items()}, {s: x.mean() for s, x in new.items()},
                          boot(ref), boot(new), np.random.default_rng(0))
    assert d["seeds"] == [1] and d["mean"] == pytest.approx(3.0)
    assert paired_difference({0: 1.0}, {1: 2.0}, boot({0: v}), boot({1: v}), np.random.default_rng(0)) is None


def test_row_effects_without_matches_keeps_the_point_estimate():
    """Rows whose evaluations have no matches files: the paired mean, no interval."""
    rows = [SimpleNamespace(row="a", seed_values={0: dict.fromkeys([m for m, *_ in EFFECT_METRICS], 10.0),
                                                  1: dict.fromkeys([m for m, *_ in EFFECT_METRICS], 12.0)}),
            SimpleNamespace(row="b", seed_values={0: dict.fromkeys([m for m, *_ in EFFECT_METRICS], 15.0),
                                                  1: dict.fromkeys([m for m, *_ in EFFECT_METRICS], 13.0)})]
    out = row_effects(rows, lambda i: None if i == 0 else 0, lambda r, s: None,
                      {"bootstrap_samples": 100, "ci_level": 0.95, "bootstrap_seed": 0})
    assert out["a"]["reference"] is None and out["a"]["metrics"]["APr"]["mean"] == 11.0
    d = out["b"]["difference"]["mask_AP"]
    assert d["mean"] == pytest.approx(3.0) and d["ci_low"] is None and d["n_seeds"] == 2
    assert out["b"]["metrics"]["mask_AP"] == {"mean": 14.0, "std": pytest.approx(np.sqrt(2)), "n_seeds": 2,
                                              "val_se": None, "ci_low": None, "ci_high": None}  # no val resamples


def test_a_runs_own_interval_holds_its_mean_and_is_zero_width_without_noise():
    rng = np.random.default_rng(0)
    flat = effects.mean_interval({0: 5.0, 1: 5.0}, {0: np.full(100, 5.0), 1: np.full(100, 5.0)}, rng)
    assert (flat["mean"], flat["ci_low"], flat["ci_high"], flat["n_seeds"]) == (5.0, 5.0, 5.0, 2)
    noisy = effects.mean_interval({0: 4.0, 1: 6.0}, {0: 4.0 + rng.normal(0, 1, 500), 1: 6.0 + rng.normal(0, 1, 500)},
                                  rng)
    assert noisy["mean"] == 5.0 and noisy["ci_low"] < 5.0 < noisy["ci_high"]
