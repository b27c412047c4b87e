# One rule per stage of seesaw_lvis.workflow.stages: the same list dvc.yaml is generated
# from. A stage's rule is its CLI call with every input and output named; nothing else.

import os

from seesaw_lvis.workflow.stages import param_values, stages


def caption_flags(flags):
    """Caption paths are repo-relative; Snakemake resolves them from this rules file."""
    return {**flags, "caption": os.path.relpath(flags["caption"], "workflow/rules")}


STAGES = stages(config)

for _stage in STAGES:

    rule:
        name:
            _stage.name
        input:
            _stage.deps,
        output:
            [
                directory(o) if o in _stage.out_dirs
                else report(o, **caption_flags(_stage.captions[o])) if o in _stage.captions
                else o
                for o in _stage.all_outs
            ],
        log:
            _stage.log,
        params:
            values=param_values(config, _stage.params),
            # bound now: `shell:` is evaluated after the loop, when _stage is the last stage
            cmd=_stage.cmd,
        resources:
            **stage_resources(_stage),
        priority: _stage.priority
        shell:
            "{params.cmd}"
