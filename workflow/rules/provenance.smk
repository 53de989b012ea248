JOBS = [
    "data",
    *expand("train_{kind}", kind=KINDS),
    *expand("centroids_{kind}", kind=KINDS),
    "sweep",
    "separation",
    "density",
    *expand("sample_{sample_set}", sample_set=SAMPLE_SETS),
    "classifier",
    "evaluate",
    "summary",
    *expand("figure_{name}", name=FIGURES),
]


rule provenance:
    input:
        records=expand("results/provenance/{job}.json", job=JOBS),
        code=code(),
    output:
        table="results/metrics/provenance.csv",
        html=report("results/metrics/provenance.html", caption="../report/provenance.rst", category="Provenance"),
    log:
        "results/logs/provenance.log",
    benchmark:
        "results/benchmarks/provenance.tsv"
    shell:
        "python -m fgsd provenance {input.records} --out {output.table} --log {log}"
