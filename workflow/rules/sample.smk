rule sample:
    input:
        DATA_FILES,
        unpack(lambda wildcards: stages.SAMPLE_SETS[wildcards.sample_set].inputs),  # e.g. guide=<file>
        model=lambda wildcards: stages.MODEL.format(kind=stages.SAMPLE_SETS[wildcards.sample_set].model),
        code=code("sample"),
    output:
        samples_npz=stages.SAMPLES,
        seconds="results/benchmarks/seconds_{sample_set}.csv",  # wall clock per block: differs run to run
        prov="results/provenance/sample_{sample_set}.json",
    params:
        tracked=tracked("sample"),
        spec=spec("sample"),
        args=args(data=DATA),
    log:
        "results/logs/sample_{sample_set}.log",
    benchmark:
        "results/benchmarks/sample_{sample_set}.tsv"
    threads: 8  # scaled down to --cores on smaller machines
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd sample {wildcards.sample_set} {params.args} --log {log} --provenance {output.prov}"
