rule figure:  # one job per stages.FIGURES entry; its function is <module>.<figure key>
    input:
        DATA_FILES,
        unpack(lambda wildcards: stages.FIGURES[wildcards.name].inputs),
        code=code("figure"),
    output:
        pdf="results/figures/{name}.pdf",
        png=report("results/figures/{name}.png", caption="../report/figure.rst", category="Figures"),
        prov="results/provenance/figure_{name}.json",
    params:
        tracked=tracked("figure"),
        spec=spec("figure"),
        args=args(data=lambda wildcards: DATA if stages.FIGURES[wildcards.name].data else None),
        caption=lambda wildcards: stages.FIGURES[wildcards.name].caption,
    log:
        "results/logs/figure_{name}.log",
    benchmark:
        "results/benchmarks/figure_{name}.tsv"
    shell:
        "python -m fgsd figure {wildcards.name} {params.args} --log {log} --provenance {output.prov}"
