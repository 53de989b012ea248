rule centroids:
    input:
        DATA_FILES,
        model=stages.MODEL,
        code=code("centroids"),
    output:
        phi=stages.PHI,
        table="results/features/{kind}/centroids.csv",
        prov="results/provenance/centroids_{kind}.json",
    params:
        tracked=tracked("centroids"),
        spec=spec("centroids"),
        args=args(data=DATA),
    log:
        "results/logs/centroids_{kind}.log",
    benchmark:
        "results/benchmarks/centroids_{kind}.tsv"
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd centroids {params.args} --log {log} --provenance {output.prov}"


use rule centroids as centroids_replicate with:  # another training seed's features (Figs 4-5 over seeds)
    input:
        DATA_FILES,
        model=stages.REPLICATE_MODEL,
        code=code("centroids"),
    output:
        phi=stages.REPLICATE_PHI,
        table=stages.REPLICATE + "/features/{kind}/centroids.csv",
        prov="results/provenance/replicates/centroids_{kind}_seed{rseed}.json",
    log:
        "results/logs/replicates/centroids_{kind}_seed{rseed}.log",
    benchmark:
        "results/benchmarks/replicates/centroids_{kind}_seed{rseed}.tsv"
