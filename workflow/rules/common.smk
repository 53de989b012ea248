# Shared names for the rules. Config flows from params.yaml (+ --configfile overlays) through
# fgsd.config.load, the same function every stage calls, so rules and stages read one config.
from fgsd import config as fgsd_config

import os

# Jobs find the params files in FGSD_PARAMS (the stage CLI's default for --params), so commands
# are the same under every preset and for DVC, which runs them on params.yaml alone.
os.environ["FGSD_PARAMS"] = " ".join(fgsd_config.snakemake_params_files(workflow, config))
KINDS = list(fgsd_config.MODEL_KINDS)
GPU = int(config["device"] == "cuda")  # rules that run a network ask a cluster for a GPU under device: cuda
DATA = f"results/data/{config['data']['dataset']}"
DATA_FILES = [f"{DATA}/{name}" for name in ("train.npz", "test.npz", "unseen.npz", "manifest.json")]


wildcard_constraints:
    kind="|".join(KINDS),


def code(*modules):
    """The library files a rule runs: editing one re-runs the rule (Snakemake's code trigger
    sees only the rule body, not the modules it imports)."""
    return [f"src/fgsd/{m}.py" for m in ("__main__", "config", "errors", "files", "provenance", *modules)]


def tracked(stage):
    """The params a stage reads, as rule params: Snakemake re-runs the job when they change."""
    return lambda wildcards: fgsd_config.select(config, fgsd_config.stage_keys(stage, **wildcards))
