"""Hostile input in reports: record text, labels, the task's name and instruction carrying HTML and
JavaScript must be inert in report.html and report.md. Checked by parsing (no element or attribute
that runs code, the payloads present as text) and, where Chromium is installed, by loading both
reports and reading the browser console (every payload would log "XSS-...")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from tunewise.cli import app

PAYLOADS = [
    '<script>console.log("XSS-script")</script>',
    '<img src=x onerror=console.log("XSS-img")>',
    '"><svg onload=console.log("XSS-svg")>',
    "[click](javascript:console.log('XSS-link'))",
    "<a href=\"javascript:console.log('XSS-a')\">x</a>",
    "--><script>console.log('XSS-comment')</script><!--",
    "</title></style></textarea><iframe src=javascript:console.log('XSS-iframe')></iframe>",
    "``` <b onmouseover=console.log('XSS-fence')>b</b>",
    "| cell | <details open ontoggle=console.log('XSS-toggle')> |",
]
LABELS = ["<b onmouseover=console.log('XSS-label')>pos</b>", "<script>console.log('XSS-neg')</script>neg"]
UNSEEN = "<img src=y onerror=console.log('XSS-unseen')>"
RUNS_CODE = {"script", "iframe", "img", "object", "embed", "form", "input", "textarea", "base", "link", "frame",
             "svg:script", "audio", "video", "source", "math", "button", "select", "a"}  # <details> is the template's


class Elements(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def assert_inert(html: str, report_page: bool = False) -> str:
    """No element or attribute that runs code or loads anything; returns the page's text."""
    page = parse(html)
    names = [t for t, _ in page.tags]
    if report_page:  # the template's own two <meta> and one <style>, plus one <style> per matplotlib SVG
        assert names.count("meta") == 2 and names.count("style") == 1 + names.count("svg"), names
    assert not set(names) & RUNS_CODE, set(names) & RUNS_CODE
    for tag, attrs in page.tags:
        for name, value in attrs:
            assert not name.lower().startswith("on"), (tag, name, value)
            assert "javascript:" not in (value or "").lower().replace(" ", ""), (tag, name, value)
    return "".join(page.text)


def markdown_as_html(md: str) -> str:
    """What a Markdown viewer makes of report.md (CommonMark lets raw HTML through, plus GFM tables)."""
    return MarkdownIt("commonmark").enable("table").render(md)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One real `tunewise run` (majority and TF-IDF, domain-gap perplexity stubbed) on hostile data,
    with a hostile test label unseen in train allowed, so the warning carries it too."""
    import tunewise.data.profile as profile_module

    folder = tmp_path_factory.mktemp("hostile")
    rows = [{"text": f"{PAYLOADS[i % len(PAYLOADS)]} good review {i}", "label": LABELS[0]} for i in range(10)]
    rows += [{"text": f"{PAYLOADS[i % len(PAYLOADS)]} bad review {i}", "label": LABELS[1]} for i in range(10)]
    rows += [rows[0], rows[10]]  # exact duplicates: their text goes into the profile's examples
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = [{"text": f"{PAYLOADS[i]} test {i}", "label": LABELS[i % 2]} for i in range(6)]
    test += [{"text": f"{PAYLOADS[-1]} new", "label": UNSEEN}]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (folder / "t.yaml").write_text(json.dumps({"name": PAYLOADS[0], "instruction": PAYLOADS[1]}))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(profile_module, "measure_domain_gap", lambda train, **kw: {"note": PAYLOADS[2]})
            result = CliRunner().invoke(app, ["run", "train.jsonl", "--test", "test.jsonl", "--task", "t.yaml",
                                              "--budget", "quick", "--no-curve", "--no-forgetting", "--candidates",
                                              "majority,classical", "--allow-unseen-labels", "--out", "run"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, (result.output, result.exception)
    return folder / "run", result.output


def test_hostile_records_are_inert_in_report_html(hostile_run):
    run, _ = hostile_run
    text = assert_inert((run / "report.html").read_text(), report_page=True)
    for payload in [*LABELS, UNSEEN, PAYLOADS[0], PAYLOADS[1]]:  # shown as text, not dropped
        assert payload in text, payload


def test_hostile_records_are_inert_in_report_md(hostile_run):
    run, _ = hostile_run
    md = (run / "report.md").read_text()
    text = assert_inert(markdown_as_html(md))
    assert LABELS[0] in text and UNSEEN in text and PAYLOADS[0] in text


def test_allowed_unseen_labels_are_a_loud_warning_in_the_console_and_both_reports(hostile_run):
    run, output = hostile_run
    assert output.count("warning: 1 test label(s) never occur in train") == 2  # before the work and in the summary
    results = json.loads((run / "results.json").read_text())
    assert len(results["warnings"]) == 1 and UNSEEN in results["warnings"][0]
    html_text = assert_inert((run / "report.html").read_text(), report_page=True)
    assert "warning: 1 test label(s) never occur in train" in html_text
    assert "## Warnings" in (run / "report.md").read_text()


def test_every_text_field_of_a_report_is_escaped():
    """Beyond what a run puts there: candidate names, errors, notes, verdict text, profile values."""
    from test_report import full_results
    from tunewise.report import render_html, render_markdown
    from tunewise.results import DataProfile

    r = full_results()
    for i, c in enumerate(r.candidates):
        c.name, c.error, c.notes = PAYLOADS[i % len(PAYLOADS)] + c.name, PAYLOADS[(i + 1) % len(PAYLOADS)], PAYLOADS
    r.verdict.summary = PAYLOADS[0]
    r.verdict.reasons[0].finding = PAYLOADS[3]
    r.verdict.would_change = PAYLOADS
    r.profile = DataProfile.model_validate({PAYLOADS[1]: PAYLOADS, "examples": [{"text": p} for p in PAYLOADS]})
    r.warnings = PAYLOADS
    r.task.name = PAYLOADS[5]
    assert_inert(render_html(r), report_page=True)
    assert_inert(markdown_as_html(render_markdown(r)))


def _console(browser: str, page: Path, profile: Path) -> tuple[str, str]:
    """(DOM after load, browser log) of a page opened headless."""
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=2000", "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_hostile_reports_log_nothing_in_chromium(hostile_run, tmp_path):
    from test_report import _chromium

    browser = _chromium()
    control = tmp_path / "control.html"  # the check must see a payload that does run
    control.write_text("<!DOCTYPE html><p>x</p><script>console.log('XSS-control')</script>")
    assert "XSS-control" in _console(browser, control, tmp_path / "p0")[1]
    run, _ = hostile_run
    md_page = tmp_path / "report-md.html"
    md_page.write_text("<!DOCTYPE html><meta charset='utf-8'>" + markdown_as_html((run / "report.md").read_text()))
    for i, page in enumerate((run / "report.html", md_page), start=1):
        dom, log = _console(browser, page, tmp_path / f"p{i}")
        assert "XSS-" not in log and "Uncaught" not in log, log[-2000:]
        assert LABELS[0] in "".join(parse(dom).text)
