rule classifier:
    input:
        DATA_FILES,
        code("network", "data", "train", "classifier"),
    output:
        model="results/models/classifier/model.pt",
        metrics="results/models/classifier/metrics.json",
        prov="results/provenance/classifier.json",
    params:
        tracked=tracked("classifier"),
        data=DATA,
        out="results/models/classifier",
    log:
        "results/logs/classifier.log",
    benchmark:
        "results/benchmarks/classifier.tsv"
    threads: 8  # scaled down to --cores on smaller machines
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd classifier --data {params.data} --out {params.out} --log {log}"
        " --provenance {output.prov}"


rule evaluate:
    input:
        DATA_FILES,
        expand("results/samples/{sample_set}.npz", sample_set=SAMPLE_SETS),
        "results/models/classifier/model.pt",
        code("network", "data", "train", "classifier", "evaluate"),
    output:
        table="results/metrics/samples.csv",
        headline="results/metrics/samples.json",
        prov="results/provenance/evaluate.json",
    params:
        tracked=tracked("evaluate"),
        data=DATA,
    log:
        "results/logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    threads: 8  # scaled down to --cores on smaller machines
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd evaluate --samples results/samples --data {params.data}"
        " --classifier results/models/classifier/model.pt --out {output.table} --log {log}"
        " --provenance {output.prov}"
