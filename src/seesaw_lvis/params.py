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
    return validate(params, source=f"{path} (+ {', '.join(COMPANION_FILES)})")


def rows(params: Mapping[str, Any], table: int | None = None) -> dict[str, dict]:
    """The table rows in paper order, optionally of one table only."""
    return {k: v for k, v in params["rows"].items() if table is None or v["table"] == table}


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
