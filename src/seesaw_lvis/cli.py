"""``python -m seesaw_lvis <verb>``: a thin argument parser over the package's functions.

Every pipeline stage (Snakemake rule, DVC stage) is exactly one call of this CLI, with the
params file as ``--params`` and every input and output named on the command line, so that
a stage can be read, rerun or debugged by hand.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("seesaw_lvis")


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _cmd_data(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P

    params = P.load(args.params)
    out = Path(args.out)
    if params["dataset"] == "synthetic":
        from seesaw_lvis.data.synthetic import generate, spec_from_params

        spec = spec_from_params(params)
        log.info("generating the synthetic dataset (%s) into %s", spec, out)
        generate(spec, out, progress=not args.no_progress)
    else:
        from seesaw_lvis.data.download import fetch_lvis_v1

        downloads = Path(params["paths"]["data"]) / "downloads"
        log.info("fetching LVIS v1 into %s (archives kept in %s)", out, downloads)
        fetch_lvis_v1(params["lvis_v1"]["files"], out, downloads, progress=not args.no_progress)
    log.info("dataset ready: %s", out)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.data import stats

    params = P.load(args.params)
    out_dir, fig_dir = Path(args.out_dir), Path(args.figures)
    result = stats.run(
        Path(args.train_json), out_dir / "class_freq.csv", out_dir / "class_freq.json",
        fig_dir / "class_frequency.png", fig_dir / "class_frequency.svg",
        rfs_threshold=params["stats"]["rfs_threshold"],
        title=f"Class frequencies of the {params['dataset']} training split")
    g = result["groups"]
    log.info("%d categories: %d rare, %d common, %d frequent; %d frequency mismatches vs the JSON; "
             "RFS epoch = %.0f images (%d without RFS)", result["num_categories"], g["r"], g["c"], g["f"],
             len(result["frequency_mismatches"]), result["expected_epoch_images_rfs"], result["num_images"])
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "loss":
        from seesaw_lvis.bench import loss

        result = loss.run(Path(args.out or "reports/bench/loss.json"))
    else:  # pragma: no cover - argparse restricts choices
        raise SystemExit(f"unknown benchmark {args.what!r}")
    log.info("benchmark written: %s", args.out or f"reports/bench/{args.what}.json")
    log.debug("%s", result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seesaw_lvis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--log", help="also write the log to this file")
        p.set_defaults(func=func)
        return p

    p = verb("data", "make the dataset: generate the synthetic one or download LVIS v1", _cmd_data)
    p.add_argument("--params", required=True, help="params/pipeline.yaml")
    p.add_argument("--out", required=True, help="dataset directory to write (LVIS v1 layout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = verb("stats", "class-frequency statistics of the training split (CSV, JSON, plot)", _cmd_stats)
    p.add_argument("--params", required=True, help="params/pipeline.yaml")
    p.add_argument("--train-json", required=True, help="LVIS-format training annotations")
    p.add_argument("--out-dir", required=True, help="writes class_freq.csv and class_freq.json here")
    p.add_argument("--figures", required=True, help="writes class_frequency.png/.svg here")

    p = verb("bench", "benchmarks written to reports/bench/<what>.json", _cmd_bench)
    p.add_argument("what", choices=["loss"], help="loss: Seesaw forward+backward vs mmdet and plain CE")
    p.add_argument("--out", help="output JSON (default reports/bench/<what>.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log)
    from seesaw_lvis.params import ParamsError

    try:
        return args.func(args)
    except (ParamsError, FileNotFoundError, ValueError) as e:
        # Bad input: one clear line naming the file/key/value; the traceback only at debug level.
        log.error("%s", e)
        log.debug("traceback", exc_info=True)
        return 2
