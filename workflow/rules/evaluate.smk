rule classifier:
    input:
        DATA_FILES,
        code=code("classifier"),
    output:
        model=stages.CLASSIFIER,
        metrics="results/models/classifier/metrics.json",
        prov="results/provenance/classifier.json",
    params:
        tracked=tracked("classifier"),
        spec=spec("classifier"),
        args=args(data=DATA),
    log:
        "results/logs/classifier.log",
    benchmark:
        "results/benchmarks/classifier.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd classifier {params.args} --log {log} --provenance {output.prov}"


rule evaluate:  # one job per sample set, plus the real-crop reference: a new set re-scores nothing else
    input:
        DATA_FILES,
        unpack(lambda wildcards: {} if wildcards.group == stages.REFERENCE else
               {"samples_npz": stages.SAMPLES.format(sample_set=wildcards.group)}),
        classifier=stages.CLASSIFIER,
        code=code("evaluate"),
    output:
        table=stages.SET_METRICS,
        prov="results/provenance/evaluate_{group}.json",
    params:
        tracked=tracked("evaluate"),
        spec=spec("evaluate"),
        args=args(data=DATA),
    log:
        "results/logs/evaluate_{group}.log",
    benchmark:
        "results/benchmarks/evaluate_{group}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd evaluate {wildcards.group} {params.args} --log {log} --provenance {output.prov}"


use rule evaluate as evaluate_replicate with:  # the same scores for another training seed's samples
    input:
        DATA_FILES,
        samples_npz=lambda wildcards: stages.REPLICATE_SAMPLES.format(sample_set=wildcards.group, rseed=wildcards.rseed),
        classifier=stages.CLASSIFIER,
        code=code("evaluate"),
    output:
        table=stages.REPLICATE_SET_METRICS,
        prov="results/provenance/replicates/evaluate_{group}_seed{rseed}.json",
    log:
        "results/logs/replicates/evaluate_{group}_seed{rseed}.log",
    benchmark:
        "results/benchmarks/replicates/evaluate_{group}_seed{rseed}.tsv"


rule sample_metrics:
    input:
        set_metrics=list(stages.set_metrics(*EVAL_GROUPS).values()),
        code=code("sample_metrics"),
    output:
        table="results/metrics/samples.csv",
        headline_json="results/metrics/samples.json",
        prov="results/provenance/sample_metrics.json",
    params:
        tracked=tracked("sample_metrics"),
        spec=spec("sample_metrics"),
        args=args(),
    log:
        "results/logs/sample_metrics.log",
    benchmark:
        "results/benchmarks/sample_metrics.tsv"
    shell:
        "python -m fgsd sample_metrics {params.args} --log {log} --provenance {output.prov}"
