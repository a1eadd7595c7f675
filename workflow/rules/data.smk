# Synthetic training images: one dataset per run of a study (its seed fixes the images;
# the study its concept layout).


rule render_training_set:
    output:
        RESULTS / "{study}" / "data" / "{run}.npz",
    log:
        LOGS / "render_training_set" / "{study}" / "{run}.log",
    conda:
        ENV
    threads: threads_for("render")
    params:
        settings=settings("data"),
        run=run_args,
        layout=lambda wildcards: STUDY_LAYOUT[wildcards.study],
    shell:
        "python -m conceptspace render --settings {params.settings:q} {params.run}"
        " --layout {params.layout} --out {output:q} > {log:q} 2>&1"
