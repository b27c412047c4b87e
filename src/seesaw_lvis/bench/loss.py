"""Micro-benchmark of the classification loss: forward + backward time per call.

Compares, on the same logits and long-tailed labels (75 % background, foreground labels
Zipf-like over a random order of the classes):

* ``ce``: plain softmax cross-entropy over ``C + 1`` logits (mmdet's default loss_cls);
* ``mmdet``: ``mmdet.models.losses.SeesawLoss`` (mmdet 3.3.0);
* ``ours``: ``seesaw_lvis.models.losses.SeesawLoss``.

Every call is timed individually (``torch.cuda.synchronize`` around it on GPU), after a
warm-up, with the three losses interleaved round-robin so that drifts of the machine hit
all three alike; the medians are reported, with the ratios ``ours/ce`` and ``mmdet/ours``.
The Seesaw losses keep accumulating their counts over the calls, as in training.

``run(Path('reports/bench/loss.json'))`` writes the JSON atomically (``seesaw_lvis.io``).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from seesaw_lvis.bench import device_name, time_interleaved
from seesaw_lvis.io import write_json

__all__ = ["run", "main", "long_tailed_labels"]

NUM_CLASSES = 1203  # LVIS v1
SIZES = (1024, 8192)
BG_FRACTION = 0.75
ZIPF_S = 1.0


def long_tailed_labels(n: int, num_classes: int, generator: torch.Generator,
                       bg_fraction: float = BG_FRACTION, zipf_s: float = ZIPF_S) -> torch.Tensor:
    """``n`` labels: ``bg_fraction`` background (= num_classes), the rest Zipf(s) over a
    random permutation of the classes (class of rank r drawn with probability ~ r**-s)."""
    n_bg = int(round(n * bg_fraction))
    ranks = torch.arange(1, num_classes + 1, dtype=torch.float64)
    probs = ranks.pow(-zipf_s)
    order = torch.randperm(num_classes, generator=generator)
    fg_rank = torch.multinomial(probs, n - n_bg, replacement=True, generator=generator)
    labels = torch.cat([order[fg_rank], torch.full((n_bg,), num_classes, dtype=torch.long)])
    return labels[torch.randperm(n, generator=generator)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _total(out) -> torch.Tensor:
    return sum(out.values()) if isinstance(out, dict) else out


def _make_cases(num_classes: int, device: str) -> Dict[str, Callable]:
    """name -> fn(logits [N, C+2] leaf, labels, weights, avg_factor) -> scalar loss."""
    from seesaw_lvis.models.losses import SeesawLoss as Ours

    ours = Ours(num_classes=num_classes).to(device)
    cases: Dict[str, Callable] = {
        "ce": lambda x, y, w, a: F.cross_entropy(x, y),
        "ours": lambda x, y, w, a: _total(ours(x, y, w, avg_factor=a)),
    }
    try:
        from mmdet.models.losses import SeesawLoss as MMDet
    except Exception as e:  # noqa: BLE001 - recorded in the report
        cases["mmdet_error"] = repr(e)  # type: ignore[assignment]
    else:
        theirs = MMDet(num_classes=num_classes).to(device)
        cases["mmdet"] = lambda x, y, w, a: _total(theirs(x, y, w, avg_factor=a))
    return cases


def _bench_one(n: int, num_classes: int, device: str, repeats: int, warmup: int,
               seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed + n)
    labels = long_tailed_labels(n, num_classes, gen).to(device)
    logits = (torch.randn(n, num_classes + 2, generator=gen) * 2.0).to(device)
    weights = torch.ones(n, device=device)
    avg_factor = float(n)  # what mmdet's BBoxHead passes: #samples with weight > 0
    cases = _make_cases(num_classes, device)
    error = cases.pop("mmdet_error", None)
    inputs = {
        "ce": logits[:, :num_classes + 1].contiguous().requires_grad_(),
        "ours": logits.clone().requires_grad_(),
        "mmdet": logits.clone().requires_grad_(),
    }

    def call(name: str):
        x = inputs[name]
        x.grad = None
        cases[name](x, labels, weights, avg_factor).backward()

    # the two Seesaw implementations must agree on this input (first call, same counts)
    check = {}
    if "mmdet" in cases:
        xs = {k: logits.clone().requires_grad_() for k in ("ours", "mmdet")}
        vals = {k: cases[k](xs[k], labels, weights, avg_factor) for k in xs}
        for k in xs:
            vals[k].backward()
        check = {"max_abs_diff_loss": abs(float(vals["ours"].detach() - vals["mmdet"].detach())),
                 "max_abs_diff_grad": float((xs["ours"].grad - xs["mmdet"].grad).abs().max())}

    times = time_interleaved({name: (lambda name=name: call(name)) for name in cases}, repeats,
                             warmup, sync=lambda: _sync(device))

    med = {name: statistics.median(ts) for name, ts in times.items()}
    res = {
        "n": n,
        "num_foreground": int((labels < num_classes).sum()),
        "median_ms": {k: round(v * 1e3, 4) for k, v in med.items()},
        "min_ms": {k: round(min(ts) * 1e3, 4) for k, ts in times.items()},
        "ratio_ours_over_ce": round(med["ours"] / med["ce"], 4),
    }
    if "mmdet" in med:
        res["ratio_mmdet_over_ours"] = round(med["mmdet"] / med["ours"], 4)
        res["ratio_mmdet_over_ce"] = round(med["mmdet"] / med["ce"], 4)
        res["agreement"] = check
    if error:
        res["mmdet_error"] = error
    return res


def run(out: Path, devices: Optional[Sequence[str]] = None, repeats: int = 20,
        sizes: Iterable[int] = SIZES, num_classes: int = NUM_CLASSES, warmup: int = 3,
        seed: int = 0) -> dict:
    """Time the three losses on each device and size; write the JSON to ``out``."""
    if devices is None:
        devices = ("cpu",) + (("cuda",) if torch.cuda.is_available() else ())
    try:
        import mmdet
        mmdet_version = mmdet.__version__
    except Exception:  # noqa: BLE001
        mmdet_version = None
    result = {
        "benchmark": "seesaw loss forward+backward",
        "torch_version": torch.__version__,
        "mmdet_version": mmdet_version,
        "num_threads": torch.get_num_threads(),
        "num_classes": num_classes,
        "bg_fraction": BG_FRACTION,
        "zipf_s": ZIPF_S,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "statistic": "median over repeats of one call (forward + backward)",
        "devices": {},
    }
    for device in devices:
        entry = {"device_name": device_name(device), "sizes": {}}
        for n in sizes:
            entry["sizes"][str(n)] = _bench_one(int(n), num_classes, device, repeats, warmup,
                                               seed)
        result["devices"][device] = entry
    write_json(out, result)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports/bench/loss.json"))
    ap.add_argument("--devices", nargs="*", default=None)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = ap.parse_args(argv)
    res = run(args.out, devices=args.devices, repeats=args.repeats, sizes=args.sizes)
    for device, entry in res["devices"].items():
        for n, r in entry["sizes"].items():
            print(f"{device} N={n}: {r['median_ms']}  ours/ce={r['ratio_ours_over_ce']}"
                  f"  mmdet/ours={r.get('ratio_mmdet_over_ours')}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
