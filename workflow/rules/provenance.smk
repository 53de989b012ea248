# Every job of the main job, replicate seeds included. A job's record is among its outputs, and
# Snakemake deletes a job's outputs when it starts it: a run killed mid-job leaves the record
# missing, so the next run re-makes it even where nothing else downstream asks for that job's files
# (a training whose sweep is up to date: Snakemake does not re-make a missing intermediate file).
RSEEDS = config["train"]["replicate_seeds"]
JOBS = [
    "data",
    *expand("train_{kind}", kind=KINDS),
    *expand("centroids_{kind}", kind=KINDS),
    "sweep",
    "separation",
    "density",
    *expand("sample_{sample_set}", sample_set=SAMPLE_SETS),
    "classifier",
    "guide",
    "d2c_autoencoder",
    "d2c_prior",
    *expand("evaluate_{group}", group=EVAL_GROUPS),
    "sample_metrics",
    "summary",
    *expand("figure_{name}", name=FIGURES),
    *expand("replicates/train_{kind}_seed{rseed}", kind=KINDS, rseed=RSEEDS),
    *expand("replicates/sweep_seed{rseed}", rseed=RSEEDS),
    *expand("replicates/sample_{group}_seed{rseed}", group=stages.REPLICATED_SETS, rseed=RSEEDS),
    *expand("replicates/evaluate_{group}_seed{rseed}", group=stages.REPLICATED_SETS, rseed=RSEEDS),
]


rule provenance:
    input:
        records=expand("results/provenance/{job}.json", job=JOBS),
        code=code("provenance"),
    output:
        table_csv="results/metrics/provenance.csv",
        html=report("results/metrics/provenance.html", caption="../report/provenance.rst", category="Provenance"),
    params:
        spec=spec("provenance"),
        args=args(),
    log:
        "results/logs/provenance.log",
    benchmark:
        "results/benchmarks/provenance.tsv"
    shell:
        "python -m fgsd provenance {params.args} --log {log}"
