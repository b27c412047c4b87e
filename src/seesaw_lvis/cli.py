"""``python -m seesaw_lvis <verb>``: a thin argument parser over the package's functions.

Every pipeline stage (Snakemake rule, DVC stage) is exactly one call of this CLI, with the
params file as ``--params`` and every input and output named on the command line, so that
a stage can be read, rerun or debugged by hand.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
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
    from seesaw_lvis.io import write_json
    from seesaw_lvis.workflow.lineage import LINEAGE_FILE, stage_lineage

    params = P.load(args.params)
    out = Path(args.out)
    lineage = stage_lineage(params, "data")  # of what this run reads: taken before it runs
    # A download extracts into an existing dir: drop the old stamp first, so a dataset left
    # half-updated by a failed run never carries the lineage of a finished one.
    (out / LINEAGE_FILE).unlink(missing_ok=True)
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
    if lineage is not None:
        # The stages reading the dataset digest this file, never its images (~100 GB).
        write_json(out / LINEAGE_FILE, lineage)
    log.info("dataset ready: %s", out)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.data import stats
    from seesaw_lvis.data.frequency import lvis_v1_fraction_for
    from seesaw_lvis.workflow.lineage import stage_lineage

    params = P.load(args.params)
    out_dir, fig_dir = Path(args.out_dir), Path(args.figures)
    result = stats.run(
        Path(args.train_json), out_dir / "class_freq.csv", out_dir / "class_freq.json",
        fig_dir / "class_frequency.png", fig_dir / "class_frequency.svg",
        rfs_threshold=lvis_v1_fraction_for(params, params["stats"]["rfs_threshold"]),
        title=f"Class frequencies of the {params['dataset']} training split",
        lineage=stage_lineage(params, "stats"))
    g = result["groups"]
    log.info("%d categories: %d rare, %d common, %d frequent; %d frequency mismatches vs the JSON; "
             "RFS epoch = %.0f images (%d without RFS)", result["num_categories"], g["r"], g["c"], g["f"],
             len(result["frequency_mismatches"]), result["expected_epoch_images_rfs"], result["num_images"])
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.engine import pretrain
    from seesaw_lvis.workflow.lineage import stage_lineage

    params = P.load(args.params)
    lineage = stage_lineage(params, f"pretrain_{args.family}")  # of what this run reads
    out = pretrain.run(params, args.family, Path(args.out_dir), lineage, progress=not args.no_progress)
    log.info("backbone weights of family %s: %s", args.family, out)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.sweep import params_for_row
    from seesaw_lvis.engine.launch import relaunch_distributed_if_needed
    from seesaw_lvis.engine.train import train

    params = params_for_row(P.load(args.params), args.row)  # a sweep cell is a row too
    row = params["rows"].get(args.row)
    if row is None:
        raise ValueError(f"--row {args.row}: not a row of params/rows.yaml ({', '.join(params['rows'])})")
    if row["kind"] == "tta":
        raise ValueError(f"--row {args.row}: a TTA row is not trained; evaluate row {row['from']}'s weights")
    if (row["kind"] == "finetune") != bool(args.init):
        raise ValueError(f"--row {args.row} (kind {row['kind']}): --init is required for finetune rows "
                         "and only for them")
    seed = _seed_of(params, args.row, args.seed)
    relaunch_distributed_if_needed()
    train(params, args.row, Path(args.out_dir), load_from=args.init, launcher=args.launcher, seed=seed)
    return 0


def _seed_of(params, row_id: str, seed: int | None) -> int:
    """The replicate seed of a (row, seed) run: given, or the row's first one."""
    from seesaw_lvis.params import row_seeds

    seeds = row_seeds(params, row_id)
    if seed is None:
        return seeds[0]
    if seed not in seeds:
        log.warning("--seed %d is not among row %s's seeds at scale %s (%s): a run outside the tables",
                    seed, row_id, params["scale"], seeds)
    return seed


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.row:  # a row: predict with its checkpoint, then evaluate the results files
        from seesaw_lvis import params as P
        from seesaw_lvis.engine.evaluate import evaluate_row
        from seesaw_lvis.sweep import params_for_row

        if not (args.params and args.checkpoint and args.out_dir):
            raise ValueError("evaluate --row needs --params, --checkpoint and --out-dir")
        params = params_for_row(P.load(args.params), args.row)  # a sweep cell is a row too
        if args.row not in params["rows"]:
            raise ValueError(f"--row {args.row}: not a row of params/rows.yaml ({', '.join(params['rows'])})")
        seed = _seed_of(params, args.row, args.seed)
        metrics = evaluate_row(params, args.row, seed, Path(args.checkpoint), Path(args.out_dir),
                               Path(args.log) if args.log else None)
        out = Path(args.out_dir) / "metrics.json"
    else:
        from seesaw_lvis.evaluation import lvis_eval

        if not (args.gt and args.results and args.out):
            raise ValueError("evaluate needs either --row ... or --gt, --results and --out")
        metrics = lvis_eval.run(args.gt, args.results, tuple(args.iou_type), Path(args.out))
        out = Path(args.out)
    for iou_type in ("bbox", "segm"):
        if iou_type in metrics:
            m = metrics[iou_type]
            log.info("%s: AP %s APr %s APc %s APf %s", iou_type,
                     *(f"{m[k] * 100:.1f}" if m.get(k) is not None else "-" for k in ("AP", "APr", "APc", "APf")))
    log.info("metrics written: %s", out)
    return 0


def _cmd_push_pull(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.workflow import remote

    try:
        fn = remote.push if args.verb == "push" else remote.pull
        fn(P.load(args.params), args.stage or None)
    except remote.RemoteError as e:
        log.error("%s", e)
        return 1
    return 0


def _cmd_track(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.engine import tracking
    from seesaw_lvis.sweep import params_for_row

    try:
        params = params_for_row(P.load(args.params), args.row)  # a sweep cell is a row too
        n = tracking.sync_pending(args.work_dir, params, args.row, _seed_of(params, args.row, args.seed))
    except tracking.TrackingUnavailableError as e:
        log.error("%s", e)
        return 1
    log.info("row %s: %d pending MLflow records replayed", args.row, n)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.report import build

    written = build.run(P.load(args.params), Path(args.out_dir))
    log.info("report: %d files written under %s", len(written), args.out_dir)
    return 0


def _cmd_sweep_report(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.report import sweep

    written = sweep.run(P.load(args.params), Path(args.out_dir))
    log.info("sweep report: %d files written under %s", len(written), args.out_dir)
    return 0


def _cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from seesaw_lvis import params as P
    from seesaw_lvis.workflow.dvc import sync_dvc_yaml

    changed = sync_dvc_yaml(P.load(args.params), args.out)
    log.info("%s %s", args.out, "regenerated" if changed else "already current")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    out = Path(args.out or f"reports/bench/{args.what.replace('-', '_')}.json")
    if args.what == "loss":
        from seesaw_lvis.bench import loss

        loss.run(out)
    elif args.what == "eval":
        from seesaw_lvis.bench import eval as eval_bench

        eval_bench.run(out, sizes=args.num_images or eval_bench.SIZES, timeout=args.timeout,
                       max_memory_gb=args.max_memory_gb)
    elif args.what == "ops":
        from seesaw_lvis.bench import ops

        ops.run(out)
    elif args.what == "stats":
        from seesaw_lvis.bench import stats

        stats.run(out, params_file=args.params)
    elif args.what == "jobs":
        from seesaw_lvis import params as P
        from seesaw_lvis.bench import jobs

        result = jobs.run(P.load(args.params), out, log_file=args.snakemake_log)
        log.info("%s: %d jobs, %.1f min wall, %.0f job-seconds", result["log"], len(result["jobs"]),
                 result["wall_min"], result["job_seconds"])
    elif args.what == "full-scale":
        from seesaw_lvis import params as P
        from seesaw_lvis.bench import full_scale

        params = P.load(args.params)
        work = Path(args.work or "results/bench/full_scale")
        if args.row:  # one row, in this process (run() starts one such process per row)
            full_scale.run_one(params, args.row, work, out)
        else:
            full_scale.run(params, out, work, params_file=args.params)
    else:
        from seesaw_lvis import params as P
        from seesaw_lvis.bench import pipeline

        pipeline.run(P.load(args.params), out, repo=Path("."), row_id=args.row or "t1_ce", iters=args.iters,
                     pairs=args.pairs)
    log.info("benchmark written: %s", out)
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

    p = verb("pretrain", "the backbone weights of a family: ImageNet's fetched (full), or pretrained "
             "on the generator's balanced set (mini, ci)", _cmd_pretrain)
    p.add_argument("--params", required=True, help="params/pipeline.yaml")
    p.add_argument("--family", required=True, choices=["resnet", "resnest"], help="backbone family")
    p.add_argument("--out-dir", required=True, help="writes backbone.pth and metrics.json here")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar")

    p = verb("train", "train one table row (resumes from its work dir's last checkpoint)", _cmd_train)
    p.add_argument("--params", required=True, help="params/pipeline.yaml")
    p.add_argument("--row", required=True, help="row id of params/rows.yaml")
    p.add_argument("--out-dir", required=True, help="writes final.pth and config.py; checkpoints in work/")
    p.add_argument("--seed", type=int, help="replicate training seed (default: the row's first in params seeds:)")
    p.add_argument("--init", help="finetune rows: the parent row's final.pth (of the same seed)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                   help="set by the torchrun re-launch on multi-GPU nodes (see engine/launch.py)")

    p = verb("evaluate", "LVIS evaluation (bbox, segm): of a row's checkpoint, or of a results file",
             _cmd_evaluate)
    p.add_argument("--params", help="params/pipeline.yaml (with --row)")
    p.add_argument("--row", help="row id: predict on the val split with --checkpoint, then evaluate")
    p.add_argument("--seed", type=int, help="with --row: the replicate seed (default: the row's first)")
    p.add_argument("--checkpoint", help="weights to evaluate the row's config with")
    p.add_argument("--out-dir", help="with --row: results.{bbox,segm}.json, metrics.json, summary.json")
    p.add_argument("--gt", help="LVIS ground-truth JSON (without --row)")
    p.add_argument("--results", help="LVIS results JSON (without --row)")
    p.add_argument("--iou-type", nargs="+", choices=["bbox", "segm"], default=["bbox", "segm"])
    p.add_argument("--out", help="metrics JSON to write (without --row)")

    p = verb("track", "replay a row's MLflow records spooled while the tracking server was down",
             _cmd_track)
    p.add_argument("--params", default="params/pipeline.yaml", help="params/pipeline.yaml")
    p.add_argument("--row", required=True, help="row id")
    p.add_argument("--seed", type=int, help="the run's replicate seed (default: the row's first)")
    p.add_argument("--work-dir", help="the run's work dir (default results/train/<row>/seed<s>/work)")

    for name, what in (("push", "send every stage's outputs (or --stage's and their upstream) to the DVC remote "
                                "of params dvc.remote"),
                       ("pull", "restore every stage's outputs (or --stage's and their upstream) from the DVC remote: fetch, "
                                "checkout, verify, and put their times in "
                                "dependency order so that snakemake -n all plans nothing for them")):
        p = verb(name, what, _cmd_push_pull)
        p.add_argument("--params", default="params/pipeline.yaml", help="params/pipeline.yaml")
        p.add_argument("--stage", action="append", help="a stage of dvc.yaml (repeatable; default: every stage)")
        p.set_defaults(verb=name)

    p = verb("report", "Tables 1-2 (md, csv, tex) and the figures, from the evaluation files", _cmd_report)
    p.add_argument("--params", default="params/pipeline.yaml", help="params/pipeline.yaml")
    p.add_argument("--out-dir", default="reports", help="writes tables/ and figures/ here")

    p = verb("sweep-report", "the Seesaw (p, q) grid's table (md, csv, tex), heatmaps and curves, from the "
             "evaluation files of its cells", _cmd_sweep_report)
    p.add_argument("--params", default="params/pipeline.yaml", help="params/pipeline.yaml")
    p.add_argument("--out-dir", default="reports", help="writes tables/sweep.* and figures/sweep_* here")

    p = verb("dvc-yaml", "regenerate dvc.yaml from the stage list", _cmd_dvc_yaml)
    p.add_argument("--params", default="params/pipeline.yaml")
    p.add_argument("--out", default="dvc.yaml")

    p = verb("bench", "benchmarks written to reports/bench/<what>.json", _cmd_bench)
    p.add_argument("what", choices=["loss", "ops", "eval", "pipeline", "full-scale", "stats", "jobs"],
                   help="loss: Seesaw fwd+bwd vs mmdet and plain CE; eval: our LVIS evaluator vs lvis-api and "
                        "faster-coco-eval; ops: our CPU RoIAlign / DCNv2 vs mmcv's CPU kernels; "
                        "pipeline: no-op snakemake/dvc times and training overhead vs mmdet's Runner; "
                        "full-scale: every row at full builds, takes a CPU training step and predicts; "
                        "stats: the stats stage on an LVIS v1-sized annotation file; "
                        "jobs: wall time and job-seconds per stage of a finished Snakemake run, from its log")
    p.add_argument("--out", help="output JSON (default reports/bench/<what>.json)")
    p.add_argument("--params", default="params/pipeline.yaml", help="pipeline, full-scale, stats: the params set")
    p.add_argument("--row", help="pipeline: the row whose training is timed (default t1_ce); full-scale: "
                                 "step this row only, in this process (default: every row, one process each)")
    p.add_argument("--work", help="full-scale: scratch folder (default results/bench/full_scale)")
    p.add_argument("--num-images", type=int, nargs="+",
                   help="eval: sizes to run, in images (default 1000 and LVIS v1 val's 19809)")
    p.add_argument("--timeout", type=float, default=3600.0, help="eval: seconds allowed to each evaluator")
    p.add_argument("--max-memory-gb", type=float,
                   help="eval: address space of each evaluator's process (default: the machine's memory - 4 GB)")
    p.add_argument("--snakemake-log", help="jobs: the run's Snakemake log (default: the newest complete one "
                                           "in .snakemake/log/)")
    p.add_argument("--iters", type=int, default=30, help="pipeline: training iterations per timed run")
    p.add_argument("--pairs", type=int, default=3, help="pipeline: interleaved (mmdet Runner, ours) run pairs")
    return parser


def main(argv: list[str] | None = None) -> int:
    # mmengine 0.10.7 imports pkg_resources, which warns on every start; nothing to act on.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
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
