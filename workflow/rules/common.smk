# Shared names for the rules. Config flows from params.yaml (+ --configfile overlays) through
# fgsd.config.load, the same function every stage calls; the lists of model kinds, sample sets,
# evaluation groups and figures come from fgsd/stages.py, the one table the stages read too.
from fgsd import config as fgsd_config
from fgsd import stages

import os

# Jobs find the params files in FGSD_PARAMS (the stage CLI's default for --params), so commands
# are the same under every preset and for DVC, which runs them on params.yaml alone.
os.environ["FGSD_PARAMS"] = " ".join(fgsd_config.snakemake_params_files(workflow, config))
KINDS = list(stages.MODEL_KINDS)
SAMPLE_SETS = list(stages.SAMPLE_SETS)
EVAL_GROUPS = list(stages.EVAL_GROUPS)
FIGURES = list(stages.FIGURES)
# One thread per job, as many jobs side by side as --cores allows. The networks are small (batch 32
# of 32x32 crops): on 2 cores two 1-thread trainings do 1.2-1.4x the steps of one 2-thread
# training (benchmarks/bench.py threads), and the smaller jobs are mostly Python start-up. Snakemake
# sets OMP_NUM_THREADS to it, so every number is also the same under any --cores. A cluster job asks
# for this many CPUs; `--set-threads train=8` gives a rule more.
JOB_THREADS = 1
GPU = int(config["device"] == "cuda")  # rules that run a network ask a cluster for a GPU under device: cuda
DATA = f"results/data/{config['data']['dataset']}"
DATA_FILES = [f"{DATA}/{name}" for name in stages.DATA_FILES]
NAME = {"train": "kind", "study_train": "kind", "sample": "sample_set", "evaluate": "group", "figure": "name"}  # a stage's name wildcard


wildcard_constraints:
    kind="|".join(KINDS),
    sample_set="|".join(SAMPLE_SETS),
    group="|".join(EVAL_GROUPS),
    name="|".join(FIGURES),
    rseed=r"\d+",


def _name(stage, wildcards):
    return wildcards.get(NAME[stage]) if stage in NAME else None


def code(stage):
    """The library files the stage's job runs, found from the imports of its module: editing one
    re-runs the job (Snakemake's code trigger sees only the rule body, not the modules it imports)."""
    return lambda wildcards: stages.code_files(stage, _name(stage, wildcards))


def spec(stage):
    """The job's rows of the stages table: editing them re-runs the job (see stages.spec)."""
    return lambda wildcards: stages.spec(stage, _name(stage, wildcards))


def tracked(stage):
    """The params a stage reads, as rule params: Snakemake re-runs the job when they change."""
    return lambda wildcards: fgsd_config.select(config, stages.stage_keys(stage, _name(stage, wildcards)))


def args(**fixed):
    """The stage's keyword arguments as key=path: every named input and output of the rule (but
    its code and provenance record; a list becomes a comma-separated value), plus `fixed` ones
    (a callable gets the wildcards; None leaves the key out)."""
    def fmt(wildcards, input, output):
        items = [*input.items(), *output.items()]
        items += [(k, v(wildcards) if callable(v) else v) for k, v in fixed.items()]
        return " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in items
                        if k not in ("code", "prov") and v is not None)
    return fmt
