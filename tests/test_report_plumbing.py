"""A report of a --quick run says it is a plumbing check, not a reproduction."""
from __future__ import annotations

from pathlib import Path

from benchmark.report.aggregate import summarize
from benchmark.report.curves import draw_errors
from benchmark.report.plumbing import PLUMBING_TITLE, is_plumbing, plumbing_note, report_title
from benchmark.report.render import render_html, render_markdown
from benchmark.report.synthetic import fake_jobs, fake_metrics, make_suite
from benchmark.report.table_figure import draw_table
from benchmark.suite import parse_registered, quick
from benchmark.suite_types import Published


def quick_results():
    parent = make_suite(name="he", title="He 2016 <Table 6>", depths=(20,), seeds=(0, 1),
                        published=[Published("resnet-20", 8.75)])
    suite = quick(parent)
    return parent, summarize(suite, fake_jobs(suite), fake_metrics(suite, epochs=1))


def test_quick_variant_is_plumbing_and_the_real_suite_is_not():
    parent, res = quick_results()
    assert res.suite.name == "he-quick" and is_plumbing(res.suite) and not is_plumbing(parent)
    assert report_title(res.suite) == f"He 2016 <Table 6> — {PLUMBING_TITLE}"
    assert report_title(parent) == "He 2016 <Table 6>" and plumbing_note(parent) == ""
    assert "suite he's --quick variant" in plumbing_note(res.suite)


def test_registered_quick_suite_is_plumbing(tmp_path):
    text = (Path(__file__).parents[1] / "suites" / "smoke.toml").read_text()
    suite = parse_registered("smoke-quick", text, "suites/smoke.toml")
    assert is_plumbing(suite) and not is_plumbing(parse_registered("smoke", text, "suites/smoke.toml"))


def test_markdown_html_and_figures_say_plumbing():
    _, res = quick_results()
    md = render_markdown(res, [], Path("."))
    assert md.splitlines()[0] == f"# He 2016 &lt;Table 6&gt; — {PLUMBING_TITLE}"
    assert "Plumbing check, not a reproduction" in md.split("## Comparison")[0]
    html = render_html(res, [])
    assert f"<h1>He 2016 &lt;Table 6&gt; — {PLUMBING_TITLE}</h1>" in html
    assert f"<title>He 2016 &lt;Table 6&gt; — {PLUMBING_TITLE}</title>" in html
    assert '<p class="plumbing">' in html
    for fig in (draw_errors(res), draw_table(res)):
        assert fig._suptitle.get_text().endswith("\n" + PLUMBING_TITLE)
    assert "measured, one seed: no interval" in [t.get_text() for t in draw_table(res).legends[0].get_texts()]
    assert "one seed per cell: no band" in [t.get_text() for t in draw_errors(res).legends[0].get_texts()]
    real = summarize(make_suite(), fake_jobs(make_suite()), fake_metrics(make_suite()))
    assert PLUMBING_TITLE not in render_markdown(real, [], Path("."))
    assert PLUMBING_TITLE not in render_html(real, []) and '<p class="plumbing">' not in render_html(real, [])
