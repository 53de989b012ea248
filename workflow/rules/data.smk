rule data:
    input:
        code("sources", "data"),
    output:
        DATA_FILES,
        prov="results/provenance/data.json",
    params:
        tracked=tracked("data"),
        out=DATA,
    log:
        "results/logs/data.log",
    benchmark:
        "results/benchmarks/data.tsv"
    shell:
        "python -m fgsd data --out {params.out} --log {log}"
        " --provenance {output.prov}"
