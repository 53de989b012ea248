rule train:
    input:
        DATA_FILES,
        unpack(lambda wildcards: stages.warm_start(wildcards.kind, config, wildcards.get("rseed"))),
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
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    shell:
        "python -m fgsd train {wildcards.kind} {params.args} --log {log} --provenance {output.prov}"


def _replicate_args(wildcards, input, output):
    """The train rule's arguments for another training seed: its own state folder, and --seed."""
    state = stages.REPLICATE.format(rseed=wildcards.rseed) + "/.state"
    return args(data=DATA, state=state)(wildcards, input, output) + f" --seed {wildcards.rseed}"


use rule train as train_replicate with:  # the same training with another seed (train.replicate_seeds)
    output:
        model=stages.REPLICATE_MODEL,
        train_log=stages.REPLICATE + "/models/{kind}/train_log.csv",
        config_json=stages.REPLICATE + "/models/{kind}/config.json",
        metrics=stages.REPLICATE + "/models/{kind}/metrics.json",
        prov="results/provenance/replicates/train_{kind}_seed{rseed}.json",
    params:
        tracked=tracked("train"),
        spec=spec("train"),
        args=_replicate_args,
    log:
        "results/logs/replicates/train_{kind}_seed{rseed}.log",
    benchmark:
        "results/benchmarks/replicates/train_{kind}_seed{rseed}.tsv"


rule guide:  # ADM-G's noise-aware classifier, on the seen classes (the baseline's guide, never the judge)
    input:
        DATA_FILES,
        code=code("guide"),
    output:
        model=stages.GUIDE,
        train_log="results/models/guide/train_log.csv",
        metrics="results/models/guide/metrics.json",
        prov="results/provenance/guide.json",
    params:
        tracked=tracked("guide"),
        spec=spec("guide"),
        args=args(data=DATA, state="results/.state"),  # resumable state lives outside the declared outputs
    log:
        "results/logs/guide.log",
    benchmark:
        "results/benchmarks/guide.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m fgsd guide {params.args} --log {log} --provenance {output.prov}"


rule d2c_autoencoder:  # D2C stage 1: the contrastive autoencoder (d2c.protocol says which crops it sees)
    input:
        DATA_FILES,
        code=code("d2c_autoencoder"),
    output:
        model=stages.D2C_AUTOENCODER,
        train_log="results/models/d2c_autoencoder/train_log.csv",
        metrics="results/models/d2c_autoencoder/metrics.json",
        prov="results/provenance/d2c_autoencoder.json",
    params:
        tracked=tracked("d2c_autoencoder"),
        spec=spec("d2c_autoencoder"),
        args=args(data=DATA, state="results/.state"),
    log:
        "results/logs/d2c_autoencoder.log",
    benchmark:
        "results/benchmarks/d2c_autoencoder.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m fgsd d2c_autoencoder {params.args} --log {log} --provenance {output.prov}"


rule d2c_prior:  # D2C stage 2: the diffusion prior on the autoencoder's standardised latents
    input:
        DATA_FILES,
        autoencoder=stages.D2C_AUTOENCODER,
        code=code("d2c_prior"),
    output:
        model=stages.D2C_PRIOR,
        train_log="results/models/d2c_prior/train_log.csv",
        metrics="results/models/d2c_prior/metrics.json",
        prov="results/provenance/d2c_prior.json",
    params:
        tracked=tracked("d2c_prior"),
        spec=spec("d2c_prior"),
        args=args(data=DATA, state="results/.state"),
    log:
        "results/logs/d2c_prior.log",
    benchmark:
        "results/benchmarks/d2c_prior.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m fgsd d2c_prior {params.args} --log {log} --provenance {output.prov}"
