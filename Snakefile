# The pipeline's Snakemake entry point: params, validation, rules. Nothing else lives here:
# every rule is one `python -m seesaw_lvis <verb>` call (workflow/rules/stages.smk, one rule
# per stage of seesaw_lvis.workflow.stages), and dvc.yaml is generated from the same list.

from seesaw_lvis.params import check_no_overrides, validate
from seesaw_lvis.workflow.dvc import commit_to_dvc, sync_dvc_yaml

PARAMS_FILE = "params/pipeline.yaml"  # + rows.yaml and scales.yaml beside it: one params set


configfile: PARAMS_FILE
configfile: "params/rows.yaml"
configfile: "params/scales.yaml"


# Fail before any job starts: bad keys/types, or a --config override the jobs would not see.
validate(config, source=PARAMS_FILE)
check_no_overrides(config, PARAMS_FILE)


include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"


onstart:
    # dvc.yaml is generated from the same stage list: keep it current for `dvc repro`.
    sync_dvc_yaml(config)


# What Snakemake built, DVC records (dvc.lock + cache): `dvc status` is clean afterwards.
onsuccess:
    commit_to_dvc(config)


onerror:
    commit_to_dvc(config)  # the stages that did finish


rule all:
    input:
        # everything the stages of the tables build (STAGES: workflow/rules/stages.smk); the
        # Seesaw ablation grid is its own target, `snakemake sweep` (the rule of its report)
        [out for stage in STAGES if stage.target == "all" for out in stage.all_outs],
