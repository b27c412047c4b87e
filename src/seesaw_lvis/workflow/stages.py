"""The pipeline's stages, described once, from the params set.

Both DAG tools are built from this list, so they cannot drift apart:

* ``workflow/rules/stages.smk`` defines one Snakemake rule per stage (name, input, output,
  log, params, resources, shell);
* ``dvc.yaml`` is generated from it (``python -m seesaw_lvis dvc-yaml``; the Snakefile
  regenerates it at start-up and ``tests/pipeline/test_dag_agreement.py`` checks the
  committed one is current and that both tools then see the same commands, deps and outs).

A stage is one ``python -m seesaw_lvis <verb>`` call whose every input and output is named
on its command line. Dependencies are explicit files (the row's whole ``_base_`` chain of
configs, the source files of the code it runs), so editing one row's config re-runs only
that row and the rows inheriting from it.

Every stage but the report also records a digest of its own deps and params (its lineage,
``seesaw_lvis.workflow.lineage``) in an output its dependants read, so a stage that re-runs
always changes what follows it, even when its real outputs come out byte-identical: DVC (which
skips a stage whose deps hash as before) then re-runs exactly what Snakemake (which plans the
whole downstream of a re-run job) does. The lineage code is therefore a dep of those stages.
"""
from __future__ import annotations

import ast
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis import sweep
from seesaw_lvis.params import dataset_dir, pretrain_path, row_seeds, run_dir

PARAMS_FILE = "params/pipeline.yaml"
PKG = Path("src/seesaw_lvis")
CONFIG_DIR = PKG / "configs"
# The stages that record their lineage run this code: a change of it re-runs them.
LINEAGE_SRC = "workflow/lineage.py"


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str]
    outs: list[str]
    params: list[str]                      # dotted keys of the params set (DVC `params:`)
    log: str
    out_dirs: list[str] = field(default_factory=list)   # outs that are directories
    metrics: list[str] = field(default_factory=list)    # outs shown by `dvc metrics show`
    plots: list[str] = field(default_factory=list)      # outs shown by `dvc plots show`
    captions: dict[str, dict[str, str]] = field(default_factory=dict)  # Snakemake report entries
    resources: dict[str, Any] = field(default_factory=dict)
    priority: int = 0                      # Snakemake `priority:` (see critical_path_priorities)
    target: str = "all"                    # the Snakemake target building it: all | sweep
    row: str | None = None                 # the row a train/evaluate stage runs (a sweep cell's id too)

    @property
    def all_outs(self) -> list[str]:
        return [*self.outs, *self.metrics, *self.plots]


def _py_files(*parts: str) -> list[str]:
    """Source files a stage runs, relative to the repository root, sorted."""
    files: list[str] = []
    for part in parts:
        p = PKG / part
        files += [str(f) for f in sorted(p.rglob("*.py"))] if p.is_dir() else [str(p)]
    return files


def config_chain(config_file: str) -> list[str]:
    """The row's config file and every local file it inherits from (``_base_``), in order."""
    chain: list[str] = []

    def visit(path: Path) -> None:
        if str(path) in chain:
            return
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        tree = ast.parse(path.read_text(), filename=str(path))
        bases: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_base_" for t in node.targets):
                value = ast.literal_eval(node.value)
                bases = [value] if isinstance(value, str) else list(value)
        for base in bases:
            if "::" not in base:  # mmdet::... files come with the pinned package
                visit(Path(os.path.normpath(path.parent / base)))
        chain.append(str(path))

    visit(CONFIG_DIR / config_file)
    return chain


@functools.lru_cache(maxsize=None)
def backbone_family(config_file: str) -> str:
    """``resnest`` when the row's config chain builds a ResNeSt backbone, else ``resnet``:
    which pretrained weights (stage ``pretrain_<family>``) the row starts from. Read from the
    files' syntax, without building the config (the stage list is built at every start)."""
    for path in config_chain(config_file):
        for node in ast.walk(ast.parse(Path(path).read_text(), filename=path)):
            if isinstance(node, ast.keyword) and node.arg == "type" and \
                    isinstance(node.value, ast.Constant) and node.value.value == "ResNeSt":
                return "resnest"
    return "resnet"


def family_row(params: Mapping[str, Any], family: str) -> str:
    """The first row whose backbone is of ``family``: its resolved backbone is what
    ``pretrain_<family>`` builds (every row of a family resolves to the same backbone;
    tests/config checks it)."""
    return next(r for r, row in params["rows"].items() if backbone_family(row["config"]) == family)


def pretrain_weights(params: Mapping[str, Any]) -> dict[str, str]:
    """``{family: <results>/pretrain/<family>/backbone.pth}`` for each backbone family the rows
    use, when the scale starts from pretrained weights (``full``: ImageNet's, fetched; ``mini``
    / ``ci`` with ``pretrained: true``: the pipeline's own pretraining); {} otherwise."""
    overlay = params["scales"][params["scale"]]
    if overlay is not None and not overlay["pretrained"]:
        return {}
    families = dict.fromkeys(backbone_family(r["config"]) for r in params["rows"].values())
    return {f: str(pretrain_path(params, f)) for f in families}


def _log(params: Mapping[str, Any], stage: str) -> str:
    return f"{params['paths']['logs']}/{stage}.log"


def stages(params: Mapping[str, Any]) -> list[Stage]:
    """Every stage of the pipeline for these params, in dependency order."""
    params = sweep.without_cells(params)  # a job's params may hold the grid's cells as rows
    data = str(dataset_dir(params))
    res, rep = params["paths"]["results"], params["paths"]["reports"]
    stats_dir, figures = f"{res}/stats", f"{rep}/figures"
    stats_json = f"{stats_dir}/class_freq.json"
    scale = params["scale"]
    out: list[Stage] = []

    log = _log(params, "data/data")
    out.append(Stage(
        name="data",
        cmd=f"python -m seesaw_lvis data --params {PARAMS_FILE} --out {data} --log {log} --no-progress",
        deps=_py_files("data/synthetic.py", "data/download.py", "data/frequency.py", LINEAGE_SRC),
        outs=[data], out_dirs=[data], params=["dataset", "seed", "synthetic", "lvis_v1"], log=log))

    log = _log(params, "stats/stats")
    out.append(Stage(
        name="stats",
        cmd=(f"python -m seesaw_lvis stats --params {PARAMS_FILE} --train-json {data}/annotations/lvis_v1_train.json"
             f" --out-dir {stats_dir} --figures {figures} --log {log}"),
        deps=[data, *_py_files("data/stats.py", "data/frequency.py", LINEAGE_SRC)],
        outs=[f"{stats_dir}/class_freq.csv", stats_json, f"{figures}/class_frequency.png",
              f"{figures}/class_frequency.svg"],
        params=["dataset", "stats", "synthetic.train_images"], log=log,
        captions={f"{figures}/class_frequency.png": {"caption": "workflow/report/class_frequency.rst",
                                                     "category": "Long tail"}}))

    engine_src = _py_files("models", "engine", "configs/resolve.py", "data/frequency.py", "compat.py",
                          LINEAGE_SRC)
    pretrained = pretrain_weights(params)
    for family, weights in pretrained.items():
        log = _log(params, f"pretrain/{family}")
        out.append(Stage(
            name=f"pretrain_{family}",
            cmd=(f"python -m seesaw_lvis pretrain --params {PARAMS_FILE} --family {family}"
                 f" --out-dir {Path(weights).parent} --log {log} --no-progress"),
            deps=[*config_chain(params["rows"][family_row(params, family)]["config"]),
                  *_py_files("engine/pretrain.py", "data/synthetic.py", "configs/resolve.py", "models",
                             "compat.py", LINEAGE_SRC)],
            outs=[weights], metrics=[f"{Path(weights).parent}/metrics.json"],
            params=["seed", "scale", f"scales.{scale}", f"pretrain.{scale}.{family}"], log=log,
            resources={"kind": "train"}))
    def run_stages(run_params: Mapping[str, Any], row_id: str, seed: int, target: str) -> list[Stage]:
        """The train (unless a tta row) and evaluate stages of one (row, seed) run."""
        row = run_params["rows"][row_id]
        chain = config_chain(row["config"])
        init_deps = [pretrained[backbone_family(row["config"])]] if pretrained else []
        # a sweep cell: its base row's params (its p and q are in its name, on its command line)
        row_params = ["dataset", "scale", f"scales.{scale}",
                      f"rows.{row.get('sweep_of', row_id)}", *(["sweep.row"] if row.get("sweep_of") else [])]
        train_dir, eval_dir = run_dir(params, "train", row_id, seed), run_dir(params, "eval", row_id, seed)
        code = [*engine_src, *(_py_files("sweep.py") if row.get("sweep_of") else [])]  # what makes the cell
        found = []
        if row["kind"] in ("train", "finetune"):
            log = _log(params, f"train/{row_id}_s{seed}")
            init, parent = "", []
            if row["kind"] == "finetune":
                parent = [f"{run_dir(params, 'train', row['from'], seed)}/final.pth"]
                init = f" --init {parent[0]}"
            found.append(Stage(
                name=f"train_{row_id}_s{seed}",
                cmd=(f"python -m seesaw_lvis train --params {PARAMS_FILE} --row {row_id} --seed {seed}"
                     f" --out-dir {train_dir}{init} --log {log}"),
                deps=[data, stats_json, *init_deps, *parent, *chain, *code],
                outs=[f"{train_dir}/final.pth", f"{train_dir}/config.py"],
                plots=[f"{train_dir}/curves.json"],
                params=row_params, log=log, resources={"kind": "train"}, target=target, row=row_id))
        weights = row_id if row["kind"] != "tta" else row["from"]
        checkpoint = f"{run_dir(params, 'train', weights, seed)}/final.pth"
        log = _log(params, f"evaluate/{row_id}_s{seed}")
        found.append(Stage(
            name=f"evaluate_{row_id}_s{seed}",
            cmd=(f"python -m seesaw_lvis evaluate --params {PARAMS_FILE} --row {row_id} --seed {seed}"
                 f" --checkpoint {checkpoint} --out-dir {eval_dir} --log {log}"),
            deps=[data, checkpoint, *chain, *code, *_py_files("evaluation")],
            # metrics.json: the whole evaluation (per-class APs, provenance), what the report
            # reads; matches.<iou>.npz: the per-detection matches the report's bootstrap
            # resamples; summary.json: the headline numbers, the DVC metric.
            outs=[f"{eval_dir}/results.bbox.json", f"{eval_dir}/results.segm.json",
                  f"{eval_dir}/metrics.json", f"{eval_dir}/matches.bbox.npz", f"{eval_dir}/matches.segm.npz"],
            metrics=[f"{eval_dir}/summary.json"],
            params=row_params, log=log, resources={"kind": "evaluate"}, target=target, row=row_id))
        return found

    for row_id in params["rows"]:
        for seed in row_seeds(params, row_id):
            out += run_stages(params, row_id, seed, "all")

    from seesaw_lvis.report import build as report

    sweep_report_src = _py_files("report/sweep.py")
    report_src = [f for f in _py_files("report", "configs/resolve.py", "io.py") if f not in sweep_report_src]

    log = _log(params, "report/report")
    out.append(Stage(
        name="report",
        cmd=f"python -m seesaw_lvis report --params {PARAMS_FILE} --out-dir {rep} --log {log}",
        deps=[*report.report_inputs(params), *report_src],
        outs=report.report_outputs(params), params=["dataset", "scale", "rows", f"seeds.{scale}", "report"],
        log=log,
        captions=report.report_captions(params)))

    if sweep.spec(params) is not None:
        # The Seesaw ablation grid (seesaw_lvis.sweep): not in `all` (make demo); `snakemake
        # sweep` / `dvc repro sweep` build it.
        from seesaw_lvis.report import sweep as sweep_report

        sweep.check_row(params)  # before any job: a row with a Seesaw loss to vary
        cell_params = sweep.with_cells(params)
        for cell in sweep.cells(params):
            for seed in sweep.seeds(params):
                out += run_stages(cell_params, cell.row_id, seed, "sweep")
        log = _log(params, "sweep/sweep")
        out.append(Stage(
            name="sweep",
            cmd=f"python -m seesaw_lvis sweep-report --params {PARAMS_FILE} --out-dir {rep} --log {log}",
            deps=[*sweep_report.inputs(params), *report_src, *sweep_report_src, *_py_files("sweep.py")],
            outs=sweep_report.outputs(params), params=["dataset", "scale", "sweep", "report"], log=log,
            captions=sweep_report.captions(params), target="sweep"))
    critical_path_priorities(out, params)
    return out


# Relative cost of a stage, for scheduling only: a training is about two evaluations; a TTA
# evaluation runs the model on 10 views of every image (the paper's 5 scales x 2 flips).
STAGE_COST = {"train": 2, "evaluate": 1, "tta": 10}


def _cost(stage: Stage, params: Mapping[str, Any]) -> int:
    kind = stage.resources.get("kind")
    row = params["rows"].get(stage.row, {})  # sweep cells: none
    if kind == "evaluate" and row.get("kind") == "tta":
        return STAGE_COST["tta"]
    return STAGE_COST.get(kind, 1)


def critical_path_priorities(stage_list: list[Stage], params: Mapping[str, Any]) -> None:
    """Set each stage's priority to the cost of the longest chain from it to the end.

    With many jobs ready at once Snakemake runs them in no useful order: at mini, the finetuned
    row and its TTA evaluation (~30 min on one core) started last, behind ten independent rows,
    and the whole run waited for that chain. Longest-remaining-chain-first (the classic list
    scheduling rule) starts the critical path as soon as it can. DVC runs one stage at a time
    and has no priorities: nothing to do there.
    """
    producer = {o: s.name for s in stage_list for o in s.all_outs}
    needs = {s.name: {producer[d] for d in s.deps if d in producer} for s in stage_list}
    for s in reversed(stage_list):  # dependency order: every dependant comes later, ranked already
        s.priority = _cost(s, params) + max((d.priority for d in stage_list if s.name in needs[d.name]),
                                            default=0)


def upstream(stage_list: list[Stage], names) -> set[str]:
    """``names`` and every stage they depend on, transitively."""
    producer = {o: s.name for s in stage_list for o in s.all_outs}
    by_name = {s.name: s for s in stage_list}
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(producer[d] for d in by_name[name].deps if d in producer)
    return seen


def sinks(stage_list: list[Stage]) -> list[str]:
    """The stages nothing depends on, in order: the heads of the targets (report, sweep)."""
    read = {d for s in stage_list for d in s.deps}
    return [s.name for s in stage_list if not read.intersection(s.all_outs)]


def params_file_of(key: str) -> str:
    """Which file of the params set holds a dotted key."""
    top = key.split(".")[0]
    return {"rows": "params/rows.yaml", "scales": "params/scales.yaml"}.get(top, PARAMS_FILE)


def param_values(params: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    """The values of dotted keys (Snakemake re-runs a rule when they change)."""
    values = {}
    for key in keys:
        node: Any = params
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


def dvc_yaml(params: Mapping[str, Any]) -> dict:
    """dvc.yaml's content for these params (same commands, deps and outs as Snakemake)."""
    doc: dict[str, Any] = {"stages": {}}
    for s in stages(params):
        entry: dict[str, Any] = {"cmd": s.cmd, "deps": list(s.deps)}
        if s.params:
            by_file: dict[str, list[str]] = {}
            for key in s.params:
                by_file.setdefault(params_file_of(key), []).append(key)
            entry["params"] = [{f: keys} for f, keys in by_file.items()]
        entry["outs"] = list(s.outs)
        # Metrics and plots are cached like every out (DVC's default): results/ is not in git, so
        # the cache and its remote are where a colleague's `dvc pull` finds them.
        if s.metrics:
            entry["metrics"] = list(s.metrics)
        if s.plots:
            entry["plots"] = [{p: {"x": "iter", "y": "loss"}} for p in s.plots]
        doc["stages"][s.name] = entry
    return doc
