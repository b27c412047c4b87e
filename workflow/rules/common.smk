# Cluster resources per stage kind, from params (resources: <scale>: <kind>).


def stage_resources(stage):
    """SLURM/local resources of a stage: training and evaluation ask for what params say."""
    kind = stage.resources.get("kind")
    spec = config["resources"][config["scale"]].get(kind) if kind else None
    return dict(spec or {})
