# Figures: drawn only from gathered datasets, as PDF with a PNG beside it. Each PNG is
# in the report (snakemake --report) with its caption from workflow/report/.
import shlex

from conceptspace.studies import FIGURE_INPUTS, figures_of

# One rule per figure of the studies that are on (conceptspace.studies: a study's figures,
# and those its config builds: fig_hidden needs overprompting or latent intervention on,
# fig_patching a patching donor), so that each PNG has its own caption in the report. A
# figure rule gets the config keys its figure reads, so that it is redrawn when they change.
FIGURES = []
for study, figure in figures_of(config):
    FIGURES.append(RESULTS / "figures" / f"fig_{figure.name}.pdf")

    rule:
        name:
            f"fig_{figure.name}"
        input:
            study=RESULTS / study.name / "study.nc",
            # the samples of the runs of the study's first seed (fig_underspec's columns)
            samples=[
                RESULTS / study.name / "runs" / run.id / "samples.nc"
                for run in study.runs(config)
                if "samples" in figure.inputs and run.seed == study.first_seed(config)
            ],
        output:
            pdf=RESULTS / "figures" / f"fig_{figure.name}.pdf",
            png=report(
                RESULTS / "figures" / f"fig_{figure.name}.png",
                caption=f"../report/{figure.caption}",
                category="Figures",
            ),
        log:
            LOGS / "figures" / f"fig_{figure.name}.log",
        localrule: True
        conda:
            ENV
        params:
            name=figure.name,
            settings=settings(*figure.settings_keys),
            samples=lambda wildcards, input: (
                f" {FIGURE_INPUTS['samples'].option} "
                + " ".join(shlex.quote(p) for p in input.samples)
                if input.samples
                else ""
            ),
        shell:
            "python -m conceptspace figure {params.name} --settings {params.settings:q}"
            " --study {input.study:q}{params.samples} --out {output.pdf:q} > {log:q} 2>&1"


SAMPLE_SHEET_PNG = RESULTS / "figures" / f"samples_{SAMPLE_SHEET_RUN}.png"
FIGURES += [SAMPLE_SHEET_PNG] if "signal" in ON else []


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
        settings=settings("figures.sample_sheet"),
    shell:
        "python -m conceptspace figure sheet --settings {params.settings:q}"
        " --samples {input:q} --out {output:q} > {log:q} 2>&1"
