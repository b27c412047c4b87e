"""dvc.yaml, generated from the stage list (seesaw_lvis.workflow.stages), never edited by hand."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from seesaw_lvis.io import write_text
from seesaw_lvis.workflow.stages import dvc_yaml

HEADER = """\
# GENERATED from params/ by seesaw_lvis.workflow.stages (`python -m seesaw_lvis dvc-yaml`;
# every `snakemake` run regenerates it). Do not edit: change params/ or the stage list.
# The same stages as the Snakemake rules: same commands, deps and outs.
"""


def render(params: Mapping[str, Any]) -> str:
    return HEADER + yaml.safe_dump(dvc_yaml(params), sort_keys=False, width=200)


def sync_dvc_yaml(params: Mapping[str, Any], path: str | Path = "dvc.yaml") -> bool:
    """Write dvc.yaml if its content differs; True when it changed."""
    path = Path(path)
    text = render(params)
    if path.is_file() and path.read_text() == text:
        return False
    write_text(path, text)
    return True
