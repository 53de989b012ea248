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
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd sample {wildcards.sample_set} {params.args} --log {log} --provenance {output.prov}"


use rule sample as sample_replicate with:  # the same sample set (same sampling noise) from another seed's model
    input:
        DATA_FILES,
        unpack(lambda wildcards: stages.SAMPLE_SETS[wildcards.sample_set].inputs),
        model=lambda wildcards: stages.REPLICATE_MODEL.format(kind=stages.SAMPLE_SETS[wildcards.sample_set].model,
                                                              rseed=wildcards.rseed),
        code=code("sample"),
    output:
        samples_npz=stages.REPLICATE_SAMPLES,
        seconds="results/benchmarks/replicates/seconds_{sample_set}_seed{rseed}.csv",
        prov="results/provenance/replicates/sample_{sample_set}_seed{rseed}.json",
    log:
        "results/logs/replicates/sample_{sample_set}_seed{rseed}.log",
    benchmark:
        "results/benchmarks/replicates/sample_{sample_set}_seed{rseed}.tsv"
