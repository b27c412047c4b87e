# Paths shared by the rules, all derived from params/pipeline.yaml (as dvc.yaml derives them).

DATA_DIR = config["paths"]["data"]
RESULTS_DIR = config["paths"]["results"]
REPORTS_DIR = config["paths"]["reports"]
LOGS_DIR = config["paths"]["logs"]

DATASET_DIR = f"{DATA_DIR}/{config['dataset']}"
STATS_DIR = f"{RESULTS_DIR}/stats"
FIGURES_DIR = f"{REPORTS_DIR}/figures"

PKG = "src/seesaw_lvis"
