rule centroids:
    input:
        DATA_FILES,
        "results/models/{kind}/model.pt",
        code("network", "data", "train", "centroids"),
    output:
        phi="results/features/{kind}/phi.npz",
        table="results/features/{kind}/centroids.csv",
        prov="results/provenance/centroids_{kind}.json",
    params:
        tracked=tracked("centroids"),
        data=DATA,
        out="results/features/{kind}",
    log:
        "results/logs/centroids_{kind}.log",
    benchmark:
        "results/benchmarks/centroids_{kind}.tsv"
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd centroids --model results/models/{wildcards.kind}/model.pt"
        " --data {params.data} --out {params.out} --log {log}"
        " --provenance {output.prov}"
