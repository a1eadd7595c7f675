# Scoring: every checkpoint of every run, prompted for each class with every method of
# evaluation.methods (patching reads the run's donor checkpoints) and read by the probe.
from conceptspace.concepts import run_id
from conceptspace.methods import sample_sheet_steps


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


# Sample sheets: the first images of every method and prompt of one chosen run
# (figures.sample_sheet), drawn with the evaluation's generators: the images it scored.
SAMPLE_SHEET = config["figures"]["sample_sheet"]
SAMPLE_SHEET_RUN = run_id(SAMPLE_SHEET["color_gap"], SAMPLE_SHEET["size_gap"], SAMPLE_SHEET["seed"])
SAMPLE_SHEET_FILE = SIGNAL / "runs" / SAMPLE_SHEET_RUN / "samples.nc"


rule sample_images:
    input:
        SIGNAL / "runs" / "{run}" / "manifest.json",
    output:
        SIGNAL / "runs" / "{run}" / "samples.nc",
    log:
        LOGS / "sample_images" / "{run}.log",
    conda:
        ENV
    threads: threads_for("evaluate")
    params:
        settings=settings("evaluation"),
        fields=run_fields,
        checkpoints=lambda wildcards: [
            SIGNAL / "runs" / wildcards.run / "checkpoints" / f"step_{step:06d}.pt"
            for step in sample_sheet_steps(SAMPLE_SHEET, STEPS)
        ],
        samples=SAMPLE_SHEET["samples"],
        device=config["compute"]["device"],
    shell:
        "python -m conceptspace sample --settings {params.settings:q}"
        " --color-gap {params.fields[color_gap]} --size-gap {params.fields[size_gap]}"
        " --seed {params.fields[seed]} --samples {params.samples} --out {output:q}"
        " --device {params.device} --threads {threads} {params.checkpoints:q} > {log:q} 2>&1"
