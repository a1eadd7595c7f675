# Figures: drawn only from gathered datasets, as PDF with a PNG beside it. Each PNG is
# in the report (snakemake --report) with its caption from workflow/report/.


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
    localrule: True
    conda:
        ENV
    params:
        settings=json.dumps(config, sort_keys=True),
    shell:
        "python -m conceptspace figure signal --settings {params.settings:q}"
        " --study {input:q} --out {output.pdf:q} > {log:q} 2>&1"


# Claims 2-4 from the study's method dimension, one panel per figures.levels entry:
# trajectories (memorization, then a turn), hidden (naive vs overprompting and latent
# intervention), patching (naive vs a donor's embedding module). One rule per figure,
# so that each PNG has its own caption in the report.
for claim in ("trajectories", "hidden", "patching"):

    rule:
        name:
            f"fig_{claim}"
        input:
            STUDY_DATASET,
        output:
            pdf=RESULTS / "figures" / f"fig_{claim}.pdf",
            png=report(
                RESULTS / "figures" / f"fig_{claim}.png",
                caption=f"../report/fig_{claim}.rst",
                category="Figures",
            ),
        log:
            LOGS / "figures" / f"fig_{claim}.log",
        localrule: True
        conda:
            ENV
        params:
            claim=claim,
            settings=json.dumps(config, sort_keys=True),
            methods=HIDDEN_METHODS,
        shell:
            "python -m conceptspace figure {params.claim} --settings {params.settings:q}"
            " --study {input:q} --methods {params.methods} --out {output.pdf:q} > {log:q} 2>&1"


SAMPLE_SHEET_PNG = RESULTS / "figures" / f"samples_{SAMPLE_SHEET_RUN}.png"
FIGURES += [SAMPLE_SHEET_PNG] if SIGNAL_STUDY else []


# The generations of the run chosen by figures.sample_sheet: rows method x prompt,
# columns checkpoint steps.
rule sample_sheet:
    input:
        SAMPLE_SHEET_FILE,
    output:
        report(SAMPLE_SHEET_PNG, caption="../report/sample_sheet.rst", category="Samples"),
    log:
        LOGS / "figures" / f"samples_{SAMPLE_SHEET_RUN}.log",
    localrule: True
    conda:
        ENV
    params:
        settings=json.dumps(config, sort_keys=True),
    shell:
        "python -m conceptspace figure sheet --settings {params.settings:q}"
        " --samples {input:q} --out {output:q} > {log:q} 2>&1"


# Claim 5 (studies.underspecification): steps to the threshold against the masked
# percentage, and "blue triangle" samples of the first seed's runs across ratios.
if UNDERSPECIFICATION:
    UNDERSPEC_SAMPLES = [
        RESULTS / "underspecification" / "runs" / run.id / "samples.nc"
        for run in underspecification_runs(config)
        if run.seed == UNDERSPECIFICATION["seeds"][0]
    ]
    FIGURES.append(RESULTS / "figures" / "fig_underspec.pdf")

    rule fig_underspec:
        input:
            study=RESULTS / "underspecification" / "study.nc",
            samples=UNDERSPEC_SAMPLES,
        output:
            pdf=RESULTS / "figures" / "fig_underspec.pdf",
            png=report(
                RESULTS / "figures" / "fig_underspec.png",
                caption="../report/fig_underspec.rst",
                category="Figures",
            ),
        log:
            LOGS / "figures" / "fig_underspec.log",
        localrule: True
        conda:
            ENV
        params:
            settings=json.dumps(config, sort_keys=True),
        shell:
            "python -m conceptspace figure underspec --settings {params.settings:q}"
            " --study {input.study:q} --samples-of {input.samples:q} --out {output.pdf:q}"
            " > {log:q} 2>&1"


# The 2x2x2 study (studies.background): every class's path in the three-concept space
# (three 2-d views of the cube) and the unseen classes' accuracy.
if BACKGROUND:
    FIGURES.append(RESULTS / "figures" / "fig_background.pdf")

    rule fig_background:
        input:
            RESULTS / "background" / "study.nc",
        output:
            pdf=RESULTS / "figures" / "fig_background.pdf",
            png=report(
                RESULTS / "figures" / "fig_background.png",
                caption="../report/fig_background.rst",
                category="Figures",
            ),
        log:
            LOGS / "figures" / "fig_background.log",
        localrule: True
        conda:
            ENV
        params:
            settings=json.dumps(config, sort_keys=True),
        shell:
            "python -m conceptspace figure background --settings {params.settings:q}"
            " --study {input:q} --out {output.pdf:q} > {log:q} 2>&1"


# CelebA (studies.celeba with a root): the classes' paths in the two attributes' concept
# space and the held-out class's accuracy, naive against intervention and patching.
if CELEBA:
    FIGURES.append(RESULTS / "figures" / "fig_celeba.pdf")

    rule fig_celeba:
        input:
            RESULTS / "celeba" / "study.nc",
        output:
            pdf=RESULTS / "figures" / "fig_celeba.pdf",
            png=report(
                RESULTS / "figures" / "fig_celeba.png",
                caption="../report/fig_celeba.rst",
                category="Figures",
            ),
        log:
            LOGS / "figures" / "fig_celeba.log",
        localrule: True
        conda:
            ENV
        params:
            settings=json.dumps(config, sort_keys=True),
        shell:
            "python -m conceptspace figure celeba --settings {params.settings:q}"
            " --study {input:q} --out {output.pdf:q} > {log:q} 2>&1"
