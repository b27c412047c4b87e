"""The Seesaw ablation grid (params ``sweep:``): one row's Seesaw loss over (p, q) x seeds.

The challenge report fixes p = 0.8 and q = 2; the grid reruns the sweep row (default
``t1_seesaw``) with every Seesaw loss of its config set to each cell's (p, q) and nothing
else changed. Each cell is a pseudo-row ``sweep_p<p>_q<q>`` (``0.4`` written ``0p4``: DVC
stage names take no dots) that trains and evaluates per seed exactly like a table row
(``python -m seesaw_lvis train --row sweep_p0p4_q1 ...``; :func:`with_cells` adds the
pseudo-rows to the params the CLI and the stage list use). Every cell is its own run, also the
one at the row's own factors: the grid then does not depend on what the row's config file
says (the stage list is built from params and file names only), and that cell reruns the row's
config at the row's seeds, a check that the pipeline reproduces its own numbers.

p = q = 0 is the grid's own control: both of Seesaw's factors are 1, leaving softmax CE with
the same normalised classifier and objectness branch.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.configs.resolve import SEESAW_TYPES, seesaw_factors

PREFIX = "sweep_"


@dataclass(frozen=True)
class Cell:
    p: float
    q: float
    row_id: str          # the pseudo-row

    @property
    def label(self) -> str:
        return f"p={self.p:g}, q={self.q:g}"


def _fmt(x: float) -> str:
    return f"{x:g}".replace(".", "p")


def cell_row_id(p: float, q: float) -> str:
    return f"{PREFIX}p{_fmt(p)}_q{_fmt(q)}"


def spec(params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """params ``sweep:`` (None: no sweep configured)."""
    return params.get("sweep")


def base_row(params: Mapping[str, Any]) -> str:
    row_id = spec(params)["row"]
    row = params["rows"].get(row_id)
    if row is None:
        raise ValueError(f"params sweep.row: '{row_id}' is not a row of rows.yaml ({', '.join(params['rows'])})")
    if row["kind"] != "train":
        raise ValueError(f"params sweep.row: '{row_id}' is a {row['kind']} row; the grid retrains a train row")
    return row_id


def check_row(params: Mapping[str, Any]) -> str:
    """The sweep row, which must be a train row whose config chain writes a Seesaw loss
    (read from the files' syntax: the stage list is built without mmdet)."""
    from seesaw_lvis.workflow.stages import config_chain

    row_id = base_row(params)
    chain = config_chain(params["rows"][row_id]["config"])
    if not any(seesaw_factors(Path(f).read_text(encoding="utf-8"), f) is not None for f in chain):
        raise ValueError(f"params sweep.row: row '{row_id}' has no Seesaw loss ({', '.join(SEESAW_TYPES)}) in "
                         f"its config chain ({', '.join(chain)})")
    return row_id


def seeds(params: Mapping[str, Any]) -> list[int]:
    return list(spec(params)["seeds"][params["scale"]])


def cells(params: Mapping[str, Any]) -> list[Cell]:
    """The grid at the params' scale, p-major; [] without ``sweep:``."""
    if spec(params) is None:
        return []
    base_row(params)  # a train row, or a clear error
    grid = spec(params)["grid"][params["scale"]]
    found = [Cell(float(p), float(q), cell_row_id(p, q)) for p in grid["p"] for q in grid["q"]]
    ids = [c.row_id for c in found]
    if len(set(ids)) < len(ids):  # values equal in 6 significant digits
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"params sweep.grid.{params['scale']}: values that name the same cell ({', '.join(dup)})")
    return found


def control(params: Mapping[str, Any]) -> Cell | None:
    """The p = q = 0 cell (softmax CE with the row's classifier), if the grid has it."""
    return next((c for c in cells(params) if c.p == 0 and c.q == 0), None)


def with_cells(params: Mapping[str, Any]) -> dict:
    """``params`` with each cell added as a row (its title, its ``seesaw: {p, q}`` for
    :func:`seesaw_lvis.configs.resolve.load`) and the sweep's seeds as its seed list. The
    table rows are unchanged."""
    out = dict(params)
    pseudo = cells(params)
    if not pseudo:
        return out
    base_id = base_row(params)
    base = params["rows"][base_id]
    out["rows"] = {**params["rows"], **{
        c.row_id: {**base, "title": f"{base['title']} ({c.label})", "seesaw": {"p": c.p, "q": c.q},
                   "sweep_of": base_id} for c in pseudo}}
    out["seeds"] = copy.deepcopy(params["seeds"])
    spec_ = out["seeds"][params["scale"]]
    spec_["rows"] = {**(spec_.get("rows") or {}), **{c.row_id: seeds(params) for c in pseudo}}
    return out


def params_for_row(params: Mapping[str, Any], row_id: str) -> Mapping[str, Any]:
    """The params a job of ``row_id`` runs with: :func:`with_cells` for a cell of the grid, the
    params themselves for a table row (which then needs nothing of the sweep)."""
    return with_cells(params) if row_id.startswith(PREFIX) else params


def without_cells(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """``params`` with the rows :func:`with_cells` added taken out again (the table rows)."""
    if not any(r.get("sweep_of") for r in params["rows"].values()):
        return params
    return {**params, "rows": {k: r for k, r in params["rows"].items() if not r.get("sweep_of")}}
