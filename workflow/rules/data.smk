rule data:
    """Make the dataset: generate the synthetic one, or download and verify LVIS v1."""
    input:
        f"{PKG}/data/synthetic.py",
        f"{PKG}/data/download.py",
        f"{PKG}/data/frequency.py",
    output:
        directory(DATASET_DIR),
    params:
        values=lambda wc: {k: config[k] for k in ("dataset", "seed", "synthetic", "lvis_v1")},
    log:
        f"{LOGS_DIR}/data/data.log",
    shell:
        "python -m seesaw_lvis data --params {PARAMS_FILE} --out {output} --log {log} --no-progress"
