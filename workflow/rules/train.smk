# Training: the VDM of each run, and the concept classifier (probe) of the study.
# Checkpoints live in an undeclared folder of the run: Snakemake deletes the declared
# outputs of a failed job, and a killed training must resume from its checkpoints.
# The manifest, written last, is the declared output.
import shlex


rule train_vdm:
    # One job per pack: its runs (compute.pack of them, their datasets the inputs, so
    # `snakemake -n` lists which runs share a pack) train in one process as one stacked
    # model (conceptspace.pack), each with its own checkpoints. A pack of one is its run.
    input:
        lambda wildcards: [
            RESULTS / wildcards.study / "data" / f"{run}.npz" for run in pack_runs(wildcards)
        ],
    output:
        RESULTS / "{study}" / "packs" / "{pack}.json",
    log:
        LOGS / "train_vdm" / "{study}" / "{pack}.log",
    benchmark:
        LOGS / "train_vdm" / "{study}" / "{pack}.benchmark.tsv"
    conda:
        ENV
    threads: threads_for("train")
    resources:
        gres=GPU,
        runtime=training_minutes,
        mem_mb=pack_memory,
    params:
        settings=lambda wildcards: settings(
            "model", training=STUDIES[wildcards.study].training(config)
        ),
        # --run ID DATA SEED RUN_DIR for each run of the pack; a change to a param's value
        # or to the shell command retrains the pack
        runs=lambda wildcards: " ".join(
            shlex.join(
                [
                    "--run",
                    run,
                    str(RESULTS / wildcards.study / "data" / f"{run}.npz"),
                    str(RUNS[wildcards.study][run].fields["seed"]),
                    str(RESULTS / wildcards.study / "runs" / run),
                ]
            )
            for run in pack_runs(wildcards)
        ),
        device=config["compute"]["device"],
        compile="--compile" if config["compute"]["compile"] else "",
    shell:
        "python -m conceptspace train-pack --settings {params.settings:q} {params.runs}"
        " --manifest {output:q} --device {params.device} --threads {threads}"
        " {params.compile} >> {log:q} 2>&1"


# A run's manifest, from its pack's: what evaluation and sampling read, as if the run had
# trained alone.
rule run_manifest:
    input:
        pack_file_of("packs"),
    output:
        RESULTS / "{study}" / "runs" / "{run}" / "manifest.json",
    log:
        LOGS / "run_manifest" / "{study}" / "{run}.log",
    localrule: True
    conda:
        ENV
    shell:
        "python -m conceptspace run-manifest --pack {input:q} --run {wildcards.run:q}"
        " --out {output:q} > {log:q} 2>&1"


rule train_probe:
    input:
        # CelebA's probe trains on its prepared set; the synthetic studies render theirs
        lambda wildcards: (
            []
            if STUDIES[wildcards.study].renders
            else [RESULTS / wildcards.study / "probe" / "probe_set.npz"]
        ),
    output:
        probe=RESULTS / "{study}" / "probe" / "probe.pt",
        metrics=RESULTS / "{study}" / "probe" / "metrics.json",
    log:
        LOGS / "train_probe" / "{study}.log",
    benchmark:
        LOGS / "train_probe" / "{study}.benchmark.tsv"
    conda:
        ENV
    threads: threads_for("probe")
    resources:
        gres=GPU,
        runtime=per_attempt(120),
        mem_mb=per_attempt(16000),
    params:
        settings=lambda wildcards: settings(
            "data", "probe", signals=study_on(wildcards.study).levels(config)
        ),
        layout=study_layout,
        data=lambda wildcards, input: f"--data {shlex.quote(input[0])}" if input else "",
        seed=lambda wildcards: study_on(wildcards.study).first_seed(config),
        device=config["compute"]["device"],
    shell:
        "python -m conceptspace probe --settings {params.settings:q} --seed {params.seed}"
        " --layout {params.layout} {params.data}"
        " --out {output.probe:q} --metrics {output.metrics:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
