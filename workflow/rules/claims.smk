# The paper's claims, judged from the gathered study datasets alone (conceptspace.claims):
# results/claims.json, and the table in the report's Claims category.
import shlex

CLAIMS_JSON = RESULTS / "claims.json"
CLAIMS_TABLE = RESULTS / "claims.html"
# Claim 5's dataset, only when the config runs the underspecification study; otherwise
# claim 5 is "not evaluated", with that reason.
UNDERSPECIFICATION_STUDY = (
    [RESULTS / "underspecification" / "study.nc"] if "underspecification" in ON else []
)


rule claims:
    input:
        signal=STUDY_DATASET,
        underspecification=UNDERSPECIFICATION_STUDY,
    output:
        json=CLAIMS_JSON,
        table=report(CLAIMS_TABLE, caption="../report/claims.rst", category="Claims"),
    log:
        LOGS / "claims.log",
    localrule: True
    conda:
        ENV
    params:
        settings=settings("claims"),
        underspecification=" ".join(
            f"--underspecification {shlex.quote(str(path))}" for path in UNDERSPECIFICATION_STUDY
        ),
    shell:
        "python -m conceptspace claims --settings {params.settings:q} --study {input.signal:q}"
        " {params.underspecification} --out {output.json:q} --table {output.table:q}"
        " > {log:q} 2>&1"
