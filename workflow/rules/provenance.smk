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
