# Every job of the main job, replicate seeds included; `all` asks for each one's record (Snakefile).
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
    *expand("replicates/centroids_{kind}_seed{rseed}", kind=("mixture", "conditional"), rseed=RSEEDS),
    *expand("replicates/separation_seed{rseed}", rseed=RSEEDS),
    *expand("replicates/density_seed{rseed}", rseed=RSEEDS),
    "feature_seeds",
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
