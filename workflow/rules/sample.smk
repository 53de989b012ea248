SAMPLE_SETS = ["conditional", "mixture", "interpolation", "mixing", "fewshot", "nfe", "inversion"]


rule sample:
    input:
        DATA_FILES,
        lambda wildcards: f"results/models/{'mixture' if wildcards.sample_set == 'mixture' else 'conditional'}/model.pt",
        code("network", "data", "train", "samplers", "generate"),
    output:
        samples="results/samples/{sample_set}.npz",
        prov="results/provenance/sample_{sample_set}.json",
    params:
        tracked=tracked("sample"),
        data=DATA,
    log:
        "results/logs/sample_{sample_set}.log",
    benchmark:
        "results/benchmarks/sample_{sample_set}.tsv"
    wildcard_constraints:
        sample_set="|".join(SAMPLE_SETS),
    threads: 8  # scaled down to --cores on smaller machines
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd sample {wildcards.sample_set} --models results/models --data {params.data}"
        " --out {output.samples} --log {log}"
        " --provenance {output.prov}"
