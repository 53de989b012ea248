rule train:
    input:
        DATA_FILES,
        code=code("train"),
    output:
        model=stages.MODEL,
        train_log="results/models/{kind}/train_log.csv",
        config_json="results/models/{kind}/config.json",
        metrics="results/models/{kind}/metrics.json",
        prov="results/provenance/train_{kind}.json",
    params:
        tracked=tracked("train"),
        spec=spec("train"),
        args=args(data=DATA, state="results/.state"),  # resumable state lives outside the declared outputs
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
        "python -m fgsd train {wildcards.kind} {params.args} --log {log} --provenance {output.prov}"
