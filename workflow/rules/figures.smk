# Figures: drawn only from gathered datasets, as PDF with a PNG beside it.


rule fig_signal:
    input:
        STUDY_DATASET,
    output:
        pdf=RESULTS / "figures" / "fig_signal.pdf",
        png=report(
            RESULTS / "figures" / "fig_signal.png",
            caption="../report/fig_signal.rst",
            category="Figures",
        ),
    log:
        LOGS / "figures" / "fig_signal.log",
    conda:
        ENV
    params:
        settings=json.dumps(config, sort_keys=True),
    shell:
        "python -m conceptspace figure signal --settings {params.settings:q}"
        " --study {input:q} --out {output.pdf:q} > {log:q} 2>&1"
