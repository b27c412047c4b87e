# The pipeline's Snakemake entry point: params, validation, rules. Nothing else lives here:
# every rule is one `python -m seesaw_lvis <verb>` call (workflow/rules/*.smk), and dvc.yaml
# declares the same stages from the same params/pipeline.yaml.

from seesaw_lvis.params import check_no_overrides, validate

PARAMS_FILE = "params/pipeline.yaml"  # + params/rows.yaml beside it: one params set


configfile: PARAMS_FILE
configfile: "params/rows.yaml"


# Fail before any job starts: bad keys/types, or a --config override the jobs would not see.
validate(config, source=PARAMS_FILE)
check_no_overrides(config, PARAMS_FILE)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/stats.smk"


rule all:
    input:
        DATASET_DIR,
        STATS_OUTPUTS,
