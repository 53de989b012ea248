# Feature-guided score diffusion (Kadkhodaie, Mallat, Simoncelli 2024): the reproduction pipeline.
#   snakemake --cores all                                  default preset (params.yaml)
#   snakemake --cores all --configfile config/smoke.yaml   a preset overlay on top of params.yaml
# Rules are thin: inputs, outputs, params, log, benchmark, then one `python -m fgsd <stage>` call.
# dvc.yaml is generated from this DAG (`python -m fgsd dvc-yaml`); a test keeps the two in sync.

from snakemake.utils import validate


configfile: "params.yaml"


include: "workflow/rules/common.smk"  # merges and checks the params files (one-line errors)
validate(config, "workflow/schemas/params.schema.yaml")  # the same schema, through Snakemake

include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/study.smk"  # `snakemake --cores all study`: not in the main job

report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        DATA_FILES,
        expand(stages.MODEL, kind=KINDS),
        expand("results/features/{kind}/centroids.csv", kind=KINDS),
        "results/metrics/summary.json",
        "results/metrics/samples.csv",
        expand("results/figures/{name}.pdf", name=FIGURES),
        "results/metrics/provenance.csv",
        # every job's record, each among its job's outputs: Snakemake re-makes a missing file only
        # for a job it needs, and a target's inputs are needed, so a job killed after Snakemake
        # deleted its outputs runs again even where no other job asks for them
        expand("results/provenance/{job}.json", job=JOBS),
