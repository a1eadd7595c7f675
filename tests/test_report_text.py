"""The report's text renders cleanly: every caption and the workflow description in
workflow/report/, filled in by Jinja with each preset's config as Snakemake fills them
(``snakemake --report``), go through docutils without a single warning, which the
report would otherwise show as a "System Message" box."""

import types

import pytest
from docutils.core import publish_parts
from docutils.utils import SystemMessage
from jinja2 import Environment

from conceptspace.config import load_config, merge
from conftest import REPO, SMOKE

REPORT_TEXTS = sorted((REPO / "workflow" / "report").glob("*.rst"))
PRESETS = {
    "config.yaml": (),
    "smoke": (SMOKE,),
    "cpu": (REPO / "workflow" / "presets" / "cpu.yaml",),
    "cpu-long": (REPO / "workflow" / "presets" / "cpu-long.yaml",),
}
# Every study on, so that each branch of the template is rendered.
ALL_STUDIES = {"studies": {"celeba": {"root": "/data/celeba"}}}


def rendered(path, config) -> str:
    """``path`` filled in as Snakemake's report fills captions and the workflow text."""
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    snakemake = types.SimpleNamespace(config=config)
    return env.from_string(path.read_text()).render(snakemake=snakemake, categories={}, files=[])


def docutils_html(text: str) -> str:
    """The HTML docutils makes of ``text``; SystemMessage on any warning or error."""
    settings = {"halt_level": 2, "report_level": 5, "traceback": True}
    return publish_parts(text, writer="html", settings_overrides=settings)["html_body"]


def config_named(name: str) -> dict:
    """config.yaml with a preset over it, or with every study on."""
    if name == "every study on":
        return merge(load_config(REPO / "config.yaml"), ALL_STUDIES)
    return load_config(REPO / "config.yaml", *PRESETS[name])


@pytest.mark.parametrize("name", [*PRESETS, "every study on"])
@pytest.mark.parametrize("path", REPORT_TEXTS, ids=lambda path: path.name)
def test_report_text_renders_without_docutils_messages(path, name):
    text = rendered(path, config_named(name))
    try:
        html = docutils_html(text)
    except SystemMessage as message:
        pytest.fail(f"{path.name} with the {name} config: {message}\n---\n{text}")
    assert "System Message" not in html and "{{" not in html and "{%" not in html


def test_a_broken_list_is_caught():
    broken = "Runs\n----\n\n- one study\n  spanning two lines\n``next`` line unindented.\n"
    with pytest.raises(SystemMessage, match="Bullet list ends without a blank line"):
        docutils_html(broken)


def test_the_workflow_text_lists_what_each_preset_ran():
    workflow = REPO / "workflow" / "report" / "workflow.rst"
    html = docutils_html(rendered(workflow, load_config(REPO / "config.yaml", SMOKE)))
    assert (
        "60 training steps" in html and "Underspecification study: 1 seed x masking ratios" in html
    )
    everything = docutils_html(rendered(workflow, config_named("every study on")))
    assert "CelebA from /data/celeba" in everything
