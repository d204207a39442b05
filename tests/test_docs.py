"""The documentation site: nbdev's processing uses the top-level `_quarto.yml`, and every page passes the browser check.

The browser check is `tests/docs_check.py` (run it alone for its full report and screenshots):
it needs Debian's `chromium` (`.ci/run` installs it) and is skipped, saying so, where it is missing.
"""
import json, subprocess, sys
from pathlib import Path

import pytest
import yaml

from docs_check import CHROMIUM, ROOT, Page, check_dom, _flatten, source_notebooks


@pytest.fixture(scope='module')
def docs_run(tmp_path_factory):
    "Run the docs check once (just nbdev's processing where there is no Chromium); return (process, output folder)."
    out = tmp_path_factory.mktemp('docs')
    nbs = [str(p.relative_to(ROOT / 'nbs')) for p in source_notebooks(ROOT / 'nbs')]  # before others add more
    cmd = [sys.executable, str(ROOT / 'tests' / 'docs_check.py'), '--out', str(out)]
    if not CHROMIUM.exists(): cmd.append('--process-only')
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200), out, nbs


def test_processed_docs_use_top_level_quarto_yml(docs_run):
    "What Quarto would read in `_proc/` is our top-level `_quarto.yml`, with a sidebar listing every notebook."
    proc = ROOT / '_proc'
    assert (proc / '_quarto.yml').read_text() == (ROOT / '_quarto.yml').read_text(), \
        '_proc/_quarto.yml differs from the top-level _quarto.yml: is nbs/_quarto.yml still a link to it?'
    sidebar = _flatten(yaml.safe_load((proc / 'sidebar.yml').read_text())['website']['sidebar']['contents'])
    nbs = docs_run[2]
    assert nbs and set(nbs) <= set(sidebar), f'notebooks missing from the sidebar: {set(nbs) - set(sidebar)}'
    assert sidebar[0] == 'index.ipynb'
    assert 'metadata-files: [nbdev.yml, sidebar.yml]' in (proc / '_quarto.yml').read_text()
    assert (proc / 'nbdev.yml').exists() and (proc / 'sidebar.yml').exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f'{CHROMIUM} is not installed (Debian package `chromium`; .ci/run installs it)')
def test_docs_site_in_browser(docs_run):
    "Every page loads, has its title, its figures and typeset equations, no traceback, and show_doc for each export."
    r, out, _ = docs_run
    assert r.returncode == 0, f'docs check failed (python tests/docs_check.py):\n{r.stdout[-8000:]}\n{r.stderr[-3000:]}'
    for png in ['home.png', 'schedules.png']:
        assert (out / png).stat().st_size > 10_000, f'{png} missing or blank'
    home = (out / 'index.html').read_text()
    site = yaml.safe_load((ROOT / '_quarto.yml').read_text())['website']
    assert f'class="brand" href="index.html">{site["title"]}<' in home  # the site config drives the navigation
    for item in site['navbar']['left']: assert f'>{item["text"]}</a>' in home


def _dom(result: dict, content: str) -> str:
    return (f'<html><head><title>{result["title"]}</title></head><body><main id="content">{content}</main>'
            f'<script type="application/json" id="docs-check-result">{json.dumps(result)}</script></body></html>')


def test_check_catches_broken_pages(tmp_path):
    "The page check itself fails on what it promises to catch (so a passing run means something)."
    nb = tmp_path / 'x.ipynb'
    ok = dict(title='Noise schedules – site', h1='Noise schedules', images=[{'src': 'data:', 'ok': True, 'w': 10}],
              mathjax=True, math_scripts=2, math_rendered=2, math_errors=0, raw_math=[])
    body = ('<h3 id="f">f</h3><div class="highlight"><pre>def f(\n    x:int, # the x\n)-&gt;int: # twice x\n</pre></div>'
            '<p><em>Double it.</em></p><a href="#f">self</a>')
    good = Page(src=nb, proc=nb, name='x.html', title='Noise schedules', has_math=True, exported={'f': 'def'})
    check_dom(good, _dom(ok, body), {'x.html': {'f'}})
    assert good.problems == []

    bad = Page(src=nb, proc=nb, name='x.html', title='Noise schedules', has_math=True, exported={'f': 'def', 'g': 'def'})
    broken = dict(ok, h1='', images=[{'src': 'data:', 'ok': False, 'w': 0}], math_rendered=0, raw_math=['$x_t$'])
    check_dom(bad, _dom(broken, body.replace('# the x', '') + '<pre>Traceback (most recent call last):</pre>'
                        '<a href="missing.html">x</a>'), {'x.html': {'f'}})
    text = '\n'.join(bad.problems)
    for expected in ['<h1>', 'images did not load', 'typeset none', 'raw TeX', 'traceback', '`g` has no show_doc',
                     '`f` parameters without docments', "broken link to 'missing.html'"]:
        assert expected in text, f'{expected!r} not flagged in:\n{text}'
