# Scoring: every checkpoint of every run, prompted for each class and read by the probe.


rule evaluate_checkpoint:
    input:
        manifest=SIGNAL / "runs" / "{run}" / "manifest.json",
        probe=SIGNAL / "probe" / "probe.pt",
    output:
        SIGNAL / "runs" / "{run}" / "eval" / "step_{step}.nc",
    log:
        LOGS / "evaluate_checkpoint" / "{run}" / "step_{step}.log",
    conda:
        ENV
    threads: threads_for("evaluate")
    params:
        settings=settings("evaluation", "probe"),
        fields=run_fields,
        checkpoint=lambda wildcards: (
            SIGNAL / "runs" / wildcards.run / "checkpoints" / f"step_{wildcards.step}.pt"
        ),
        device=config["compute"]["device"],
    shell:
        "python -m conceptspace evaluate --settings {params.settings:q}"
        " --checkpoint {params.checkpoint:q} --probe {input.probe:q}"
        " --color-gap {params.fields[color_gap]} --size-gap {params.fields[size_gap]}"
        " --seed {params.fields[seed]} --out {output:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
