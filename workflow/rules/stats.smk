STATS_OUTPUTS = [
    f"{STATS_DIR}/class_freq.csv",
    f"{STATS_DIR}/class_freq.json",
    f"{FIGURES_DIR}/class_frequency.png",
    f"{FIGURES_DIR}/class_frequency.svg",
]


rule stats:
    """Class-frequency statistics and repeat factors of the training split, and their plot."""
    input:
        DATASET_DIR,
        f"{PKG}/data/stats.py",
        f"{PKG}/data/frequency.py",
    output:
        STATS_OUTPUTS,
    params:
        values=lambda wc: {k: config[k] for k in ("dataset", "stats")},
    log:
        f"{LOGS_DIR}/stats/stats.log",
    shell:
        "python -m seesaw_lvis stats --params {PARAMS_FILE}"
        " --train-json {DATASET_DIR}/annotations/lvis_v1_train.json"
        " --out-dir {STATS_DIR} --figures {FIGURES_DIR} --log {log}"
