rule data:
    input:
        code=code("data"),
    output:
        DATA_FILES,
        prov="results/provenance/data.json",
    params:
        tracked=tracked("data"),
        spec=spec("data"),
        args=args(out=DATA),
    log:
        "results/logs/data.log",
    benchmark:
        "results/benchmarks/data.tsv"
    shell:
        "python -m fgsd data {params.args} --log {log} --provenance {output.prov}"
