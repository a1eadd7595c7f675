# Scoring: every checkpoint of every run, prompted for each class with every method of
# evaluation.methods (patching reads the run's donor checkpoints) and read by the probe,
# then gathered into the run's trajectory. One job per pack (compute.pack runs, the packs
# of rule train_vdm), not per checkpoint: the probe is loaded once, each step's samples of
# all the pack's runs are drawn together (one batched sampler call per step on a GPU,
# evaluate.evaluate_pack), and planning the paper-scale study (320 runs x 60 checkpoints
# and more) is Snakemake's per-job work. The per-checkpoint evaluations (eval/step_*.nc)
# are working files, like the checkpoints: a killed job resumes at the checkpoint it
# stopped at, and one whose inputs did not change is kept. The list of them, written
# last, is the declared output; each run's trajectory is gathered from it.
import shlex

from conceptspace.runs import run_id
from conceptspace.methods import sample_sheet_steps
from conceptspace.netcdf import EVALUATION_VERSION


rule evaluate_pack:
    input:
        manifests=lambda wildcards: [
            RESULTS / wildcards.study / "runs" / run / "manifest.json"
            for run in pack_runs(wildcards)
        ],
        probe=RESULTS / "{study}" / "probe" / "probe.pt",
    output:
        RESULTS / "{study}" / "evaluated" / "{pack}.json",
    log:
        LOGS / "evaluate_pack" / "{study}" / "{pack}.log",
    benchmark:
        LOGS / "evaluate_pack" / "{study}" / "{pack}.benchmark.tsv"
    conda:
        ENV
    threads: threads_for("evaluate")
    resources:
        gres=GPU,
        runtime=evaluation_minutes,  # ~1.5 s per paper-scale checkpoint on an H200
        mem_mb=pack_memory,
    params:
        settings=sampling_settings("probe"),
        # --run ID RUN_DIR FIELDS for each run of the pack: its seed, gaps, masking ratio
        runs=lambda wildcards: " ".join(
            shlex.join(
                [
                    "--run",
                    run,
                    str(RESULTS / wildcards.study / "runs" / run),
                    json.dumps(RUNS[wildcards.study][run].fields, sort_keys=True),
                ]
            )
            for run in pack_runs(wildcards)
        ),
        steps=lambda wildcards: " ".join(str(step) for step in STEPS[wildcards.study]),
        device=config["compute"]["device"],
        # Not read by the command: a changed version is a changed param, so Snakemake
        # plans the pack's evaluation again after an update of what evaluations compute.
        code=f"evaluation version {EVALUATION_VERSION}",
    shell:
        "python -m conceptspace evaluate-pack --settings {params.settings:q}"
        " --probe {input.probe:q} {params.runs} --steps {params.steps} --out {output:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"


# A run's trajectory, gathered from the evaluations its pack's job listed.
rule gather_run:
    input:
        pack_file_of("evaluated"),
    output:
        RESULTS / "{study}" / "runs" / "{run}" / "trajectory.nc",
    log:
        LOGS / "gather_run" / "{study}" / "{run}.log",
    localrule: True
    conda:
        ENV
    shell:
        "python -m conceptspace gather-run --evaluated {input:q} --run {wildcards.run:q}"
        " --out {output:q} > {log:q} 2>&1"


# Sample sheets: the first images of every method and prompt of one chosen run
# (figures.sample_sheet), drawn with the evaluation's generators: the images it scored.
SAMPLE_SHEET = config["figures"]["sample_sheet"]
SAMPLE_SHEET_RUN = run_id(SAMPLE_SHEET["color_gap"], SAMPLE_SHEET["size_gap"], SAMPLE_SHEET["seed"])
SAMPLE_SHEET_FILE = SIGNAL / "runs" / SAMPLE_SHEET_RUN / "samples.nc"


rule sample_images:
    input:
        RESULTS / "{study}" / "runs" / "{run}" / "manifest.json",
    output:
        RESULTS / "{study}" / "runs" / "{run}" / "samples.nc",
    log:
        LOGS / "sample_images" / "{study}" / "{run}.log",
    conda:
        ENV
    threads: threads_for("evaluate")
    resources:
        gres=GPU,
        runtime=per_attempt(30),
        mem_mb=per_attempt(8000),
    params:
        settings=sampling_settings(),
        run=run_args,
        layout=study_layout,
        checkpoints=lambda wildcards: run_checkpoints(wildcards, sampled_steps(wildcards)),
        samples=SAMPLE_SHEET["samples"],
        device=config["compute"]["device"],
    shell:
        "python -m conceptspace sample --settings {params.settings:q} {params.run}"
        " --layout {params.layout} --samples {params.samples} --out {output:q}"
        " --device {params.device} --threads {threads} {params.checkpoints:q} > {log:q} 2>&1"
