# Synthetic training images: one dataset per run (its seed fixes the images).


rule render_training_set:
    output:
        SIGNAL / "data" / "{run}.npz",
    log:
        LOGS / "render_training_set" / "{run}.log",
    conda:
        ENV
    threads: threads_for("render")
    params:
        settings=settings("data"),
        fields=run_fields,
    shell:
        "python -m conceptspace render --settings {params.settings:q}"
        " --color-gap {params.fields[color_gap]} --size-gap {params.fields[size_gap]}"
        " --seed {params.fields[seed]} --out {output:q} > {log:q} 2>&1"
