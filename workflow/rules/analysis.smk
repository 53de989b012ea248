rule sweep:
    input:
        DATA_FILES,
        expand("results/models/{kind}/model.pt", kind=KINDS),
        code("network", "data", "train", "kl", "analysis"),
    output:
        table="results/analysis/sweep.csv",
        prov="results/provenance/sweep.json",
    params:
        tracked=tracked("sweep"),
        data=DATA,
    log:
        "results/logs/sweep.log",
    benchmark:
        "results/benchmarks/sweep.tsv"
    threads: 8  # scaled down to --cores on smaller machines
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd sweep --models results/models --data {params.data} --out {output.table} --log {log}"
        " --provenance {output.prov}"


rule separation:
    input:
        expand("results/features/{kind}/phi.npz", kind=["mixture", "conditional"]),
        code("network", "data", "train", "kl", "analysis"),
    output:
        table="results/analysis/separation.csv",
        prov="results/provenance/separation.json",
    params:
        tracked=tracked("separation"),
    log:
        "results/logs/separation.log",
    benchmark:
        "results/benchmarks/separation.tsv"
    shell:
        "python -m fgsd separation --features results/features --out {output.table} --log {log}"
        " --provenance {output.prov}"


rule density:
    input:
        DATA_FILES,
        "results/models/conditional/model.pt",
        "results/features/conditional/phi.npz",
        code("network", "data", "train", "kl", "analysis"),
    output:
        table="results/analysis/density.csv",
        prov="results/provenance/density.json",
    params:
        tracked=tracked("density"),
        data=DATA,
    log:
        "results/logs/density.log",
    benchmark:
        "results/benchmarks/density.tsv"
    threads: 8  # scaled down to --cores on smaller machines
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd density --model results/models/conditional/model.pt"
        " --phi results/features/conditional/phi.npz --data {params.data} --out {output.table} --log {log}"
        " --provenance {output.prov}"


rule summary:
    input:
        "results/analysis/sweep.csv",
        "results/analysis/separation.csv",
        "results/analysis/density.csv",
        "results/metrics/samples.json",
        "results/models/classifier/metrics.json",
        code("network", "data", "train", "kl", "analysis"),
    output:
        summary="results/metrics/summary.json",
        gain="results/analysis/psnr_gain.csv",
        prov="results/provenance/summary.json",
    params:
        tracked=tracked("summary"),
    log:
        "results/logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    shell:
        "python -m fgsd summary --analysis results/analysis --samples results/metrics/samples.json"
        " --classifier results/models/classifier/metrics.json --out {output.summary} --log {log}"
        " --provenance {output.prov}"
