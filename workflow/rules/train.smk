rule train:
    input:
        DATA_FILES,
        code("network", "data", "train"),
    output:
        model="results/models/{kind}/model.pt",
        log_csv="results/models/{kind}/train_log.csv",
        config="results/models/{kind}/config.json",
        metrics="results/models/{kind}/metrics.json",
        prov="results/provenance/train_{kind}.json",
    params:
        tracked=tracked("train"),
        data=DATA,
        out="results/models/{kind}",
    log:
        "results/logs/train_{kind}.log",
    benchmark:
        "results/benchmarks/train_{kind}.tsv"
    threads: 8  # scaled down to --cores on smaller machines
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    shell:
        "python -m fgsd train --kind {wildcards.kind} --data {params.data}"
        " --out {params.out} --log {log}"
        " --provenance {output.prov}"
