"""Load and validate the params set, the single source of truth of both DAGs.

The set is ``params/pipeline.yaml`` plus ``rows.yaml`` (the table rows) and ``scales.yaml``
(the scale overlays) beside it, merged into one mapping and validated together. Snakemake
reads them with ``configfile:`` lines, DVC with ``vars`` entries, the CLI with ``--params
params/pipeline.yaml``.

The Snakefile calls :func:`validate` on its ``config`` before any rule is scheduled, and
every CLI verb calls :func:`load` on the ``--params`` file it is given, so a bad value fails
with the same message whichever tool runs the pipeline.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml

SCHEMA_ENV = "SEESAW_LVIS_SCHEMA"


class ParamsError(ValueError):
    """A params file is missing, malformed or does not match the schema."""


def schema_path() -> Path:
    """The schema lives in the workflow (snakemake-workflows layout); found from the package."""
    if os.environ.get(SCHEMA_ENV):
        return Path(os.environ[SCHEMA_ENV])
    here = Path(__file__).resolve()
    for root in (Path.cwd(), *here.parents):
        candidate = root / "workflow" / "schemas" / "params.schema.yaml"
        if candidate.is_file():
            return candidate
    raise ParamsError("workflow/schemas/params.schema.yaml not found (run from the repository root)")


def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate(params: Mapping[str, Any], source: str = "params") -> dict:
    """Validate ``params`` against the schema; raise ParamsError naming every bad key."""
    import jsonschema

    schema = yaml.safe_load(schema_path().read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            if e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                extra = sorted(set(e.instance) - set(allowed))
                where = _key_path(e)
                for key in extra:
                    full = key if where == "<top level>" else f"{where}.{key}"
                    lines.append(f"unknown key '{full}' (allowed here: {', '.join(allowed)})")
            else:
                lines.append(f"key '{_key_path(e)}': {e.message}")
        raise ParamsError(f"{source}: invalid parameters:\n  " + "\n  ".join(lines))
    return dict(params)


# Files merged with pipeline.yaml, from the same directory: the table rows, the scale overlays.
COMPANION_FILES = ("rows.yaml", "scales.yaml")


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load(path: str | os.PathLike) -> dict:
    """Read ``pipeline.yaml`` and its companion files beside it, merged, and validate them."""
    path = Path(path)
    params = _read_yaml(path)
    for name in COMPANION_FILES:
        extra_path = path.parent / name
        extra = _read_yaml(extra_path)
        overlap = sorted(set(params) & set(extra))
        if overlap:
            raise ParamsError(f"{extra_path}: key(s) {', '.join(overlap)} also set elsewhere in {path.parent}")
        params.update(extra)
    params = validate(params, source=f"{path} (+ {', '.join(COMPANION_FILES)})")
    check_seeds(params, source=str(path))
    return params


def rows(params: Mapping[str, Any], table: int | None = None) -> dict[str, dict]:
    """The table rows in paper order, optionally of one table only."""
    return {k: v for k, v in params["rows"].items() if table is None or v["table"] == table}


def row_seeds(params: Mapping[str, Any], row_id: str) -> list[int]:
    """The replicate training seeds of ``row_id`` at the params' scale (``seeds:`` in
    pipeline.yaml): the row's own list, else its table's, else the scale's default."""
    spec = params["seeds"][params["scale"]]
    table = f"table{params['rows'][row_id]['table']}"
    return list((spec.get("rows") or {}).get(row_id) or spec.get(table) or spec["default"])


def check_seeds(params: Mapping[str, Any], source: str = "params") -> None:
    """Seeds name known rows, and a finetune/tta row runs only on seeds its parent has."""
    for scale, spec in params["seeds"].items():
        for row_id in spec.get("rows") or {}:
            if row_id not in params["rows"]:
                raise ParamsError(f"{source}: key 'seeds.{scale}.rows.{row_id}': not a row of rows.yaml")
    for row_id, row in params["rows"].items():
        if row["kind"] in ("finetune", "tta"):
            parent = row["from"]
            if parent not in params["rows"]:
                raise ParamsError(f"{source}: row {row_id}: 'from: {parent}' is not a row of rows.yaml")
            missing = sorted(set(row_seeds(params, row_id)) - set(row_seeds(params, parent)))
            if missing:
                raise ParamsError(
                    f"{source}: key 'seeds.{params['scale']}': row {row_id} ({row['kind']}) lists seed(s) "
                    f"{missing} that its parent row {parent} does not train ({row_seeds(params, parent)})")


def run_dir(params: Mapping[str, Any], what: str, row_id: str, seed: int) -> Path:
    """Where one (row, seed) run keeps its files: ``<results>/<what>/<row>/seed<seed>``
    (``what``: ``train`` or ``eval``)."""
    return Path(params["paths"]["results"]) / what / row_id / f"seed{seed}"


def pretrain_path(params: Mapping[str, Any], family: str) -> Path:
    """The backbone weights every row of ``family`` (``resnet`` | ``resnest``) starts from,
    written by the stage ``pretrain_<family>``."""
    return Path(params["paths"]["results"]) / "pretrain" / family / "backbone.pth"


def dataset_dir(params: Mapping[str, Any]) -> Path:
    """Where the chosen dataset lives (LVIS v1 layout: annotations/, train2017/, val2017/)."""
    return Path(params["paths"]["data"]) / params["dataset"]


def check_no_overrides(config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse ``snakemake --config key=value``: jobs read the params *file*, so an override
    would make Snakemake plan with values the jobs (and DVC) never see."""
    on_disk = load(path)
    if dict(config) != on_disk:
        changed = sorted(k for k in set(config) | set(on_disk) if config.get(k) != on_disk.get(k))
        raise ParamsError(
            f"{path}: the Snakemake config differs from the file in key(s) {', '.join(changed)}; "
            "edit the params file instead of passing --config/--configfile (both DAG tools and every "
            "job read the file)")
