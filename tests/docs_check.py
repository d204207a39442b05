"""Check the documentation site without Quarto, in a real browser.

`nbdev_docs` needs Quarto. This check runs the same nbdev notebook processing that Quarto would read
(`refresh_quarto_yml`, the module index, `nbdev_sidebar`, `proc_nbs` into `_proc/`: `#| hide`, `show_doc`,
export directives), renders every processed notebook to an HTML page with nbconvert (MathJax from the
`jupyter-server-mathjax` package, copied next to the pages, so nothing is fetched from the network), writes a
home page with navigation built from `_proc/_quarto.yml` and `_proc/sidebar.yml`, then opens every page in
headless Chromium and checks that it loads, carries the notebook's title, shows its figures, typeset its
equations, has no Python traceback, and documents every exported function with `show_doc`.

Usage: `python tests/docs_check.py [--out DIR] [--cached] [--workers N]`; prints a summary, saves screenshots of
the home page and the schedules page to DIR, and exits non-zero on any failure. `tests/test_docs.py` runs it.
"""
from __future__ import annotations
import argparse, ast, html, json, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(shutil.which('chromium') or '/usr/bin/chromium')  # Debian's package
CHROME_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--no-first-run', '--hide-scrollbars']
SCREENSHOT_NB = '00_schedules.ipynb'  # the theory page whose screenshot goes next to the home page's


@dataclass
class Page:
    "One rendered notebook: where it came from, where it went, and what its page must show."
    src: Path                      # the notebook in nbs/
    proc: Path | None              # its processed copy in _proc/ (None when processing failed)
    name: str                      # the page's file name in the output folder (Quarto's `output-file`)
    title: str = ''                # from the source notebook's `# Title` cell
    description: str = ''          # from its `> one-liner`
    has_math: bool = False         # markdown with $...$ that MathJax must typeset
    exported: dict = field(default_factory=dict)  # exported function/class name -> 'def' or 'class'
    problems: list = field(default_factory=list)  # failures
    warnings: list = field(default_factory=list)  # worth fixing, not failures
    seconds: float | None = None   # nbdev processing time (None: taken from the cache)


# ---------------------------------------------------------------- nbdev processing (what Quarto would read)
def source_notebooks(nbs: Path) -> list[Path]:
    "The notebooks nbdev documents: `nbglob`'s rules (skip names and folders starting with `_` or `.`)."
    from nbdev.doclinks import nbglob
    return sorted(Path(p) for p in nbglob(nbs))


NB_TIMEOUT = 60  # seconds nbdev may spend processing one notebook (show_doc cells, imports) before it counts as a failure


def _timed_main(o) -> None:
    """Stand-in for `nbdev.serve_drv.main` inside `proc_nbs`'s worker processes: run it under a time limit and
    record its duration, warnings and error in `$DOCS_CHECK_LOG` instead of stopping the whole pool at the first error."""
    import os, signal, traceback, warnings, hashlib
    import nbdev.serve_drv
    src = Path(o[0])
    rec = {'src': str(src), 'error': '', 'warnings': []}
    limit = int(os.environ.get('DOCS_CHECK_TIMEOUT', NB_TIMEOUT))
    def _alarm(*_): raise TimeoutError(f'took more than {limit} s')
    old = signal.signal(signal.SIGALRM, _alarm)
    t = time.time()
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            signal.alarm(limit)
            try: nbdev.serve_drv.main(o)
            finally: signal.alarm(0)
        rec['warnings'] = [str(w.message).split('\n---\n')[0] + (': ' + str(w.message).split('\n---\n')[1].strip().splitlines()[0]
                           if '\n---\n' in str(w.message) else '') for w in ws]
    except BaseException as e:
        cause = e.__cause__
        lines = str(e).strip().splitlines() or [type(e).__name__]
        rec['error'] = lines[0] + (f' `{lines[1].strip()[:70]}`' if len(lines) > 1 else '') + (
            ' -> ' + ''.join(traceback.format_exception_only(type(cause), cause)).strip() if cause else '')
        os.environ.pop('IN_TEST', None)
    finally: signal.signal(signal.SIGALRM, old)
    rec['seconds'] = round(time.time() - t, 2)
    log = Path(os.environ['DOCS_CHECK_LOG'])
    (log / (hashlib.md5(str(src).encode()).hexdigest() + '.json')).write_text(json.dumps(rec))


def process_notebooks(workers: int = 2, force: bool = True, timeout: int = NB_TIMEOUT) -> tuple[Path, dict]:
    """Run nbdev's docs pre-processing into `_proc/` (what `nbdev_proc_nbs` does, without its Quarto install step).
    Returns `_proc` and {source notebook: {'error', 'seconds', 'warnings'}} for every notebook it saw at the start
    (cached ones have `seconds` None)."""
    import os
    import nbdev.serve_drv
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    cfg = get_config(path=ROOT)
    nbs = cfg.nbs_path
    seen = source_notebooks(nbs)               # notebooks others add while this runs are left for the next run
    refresh_quarto_yml()                       # writes nbs/nbdev.yml; keeps our nbs/_quarto.yml symlink
    _build_modidx()                            # the index `show_doc` and the doc links read
    nbdev_sidebar.__wrapped__(path=str(nbs))   # writes nbs/sidebar.yml (custom_sidebar = False)
    sys.path.insert(0, str(Path(__file__).parent))
    import docs_check  # by module name, so that the spawned workers can unpickle `_timed_main`
    proc = cfg.config_path / '_proc'
    start = time.time()
    with tempfile.TemporaryDirectory(prefix='docs-check-log-') as log:
        env = {'DOCS_CHECK_LOG': log, 'DOCS_CHECK_TIMEOUT': str(timeout)}
        old_env, real_main = {k: os.environ.get(k) for k in env}, nbdev.serve_drv.main
        os.environ.update(env)
        nbdev.serve_drv.main = docs_check._timed_main
        try: proc_nbs(str(nbs), n_workers=workers, force=force); crash = ''
        except Exception as e: crash = f'{type(e).__name__}: {e}'  # e.g. a worker killed for memory
        finally:
            nbdev.serve_drv.main = real_main
            for k, v in old_env.items():
                if v is None: os.environ.pop(k, None)
                else: os.environ[k] = v
        results = {Path(r['src']).resolve(): r for r in (json.loads(f.read_text()) for f in Path(log).glob('*.json'))}
    report = {}
    for s in seen:
        r = results.get(s.resolve())
        dst = proc / s.relative_to(nbs)
        if r is None and not (dst.exists() and dst.stat().st_mtime >= s.stat().st_mtime):
            why = crash or ("nbdev's cache kept an older _proc copy; run without --cached" if dst.exists() else 'no output')
            r = {'error': f'not processed ({why})', 'seconds': None, 'warnings': []}
        r = r or {'error': '', 'seconds': None, 'warnings': []}
        if r['error'] and dst.exists() and dst.stat().st_mtime < start: dst.unlink()  # do not render a stale copy
        report[s] = r
    return proc, report


# ---------------------------------------------------------------- reading notebooks
def read_nb(path: Path) -> dict: return json.loads(Path(path).read_text(encoding='utf-8'))
def _src(cell) -> str: return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def title_and_description(nb: dict) -> tuple[str, str]:
    "The `# Title` and `> description` of a source notebook's first markdown cell ('' when missing)."
    for cell in nb['cells']:
        if cell['cell_type'] != 'markdown': continue
        lines = [l.strip() for l in _src(cell).strip().splitlines()]
        if not lines or not re.match(r'#\s+\S', lines[0]): return '', ''
        desc = next((l[1:].strip() for l in lines[1:] if l.startswith('>')), '')
        return lines[0].lstrip('#').strip(), desc
    return '', ''


def frontmatter(nb: dict) -> dict:
    "The YAML front matter nbdev's processing puts in a leading raw cell."
    for cell in nb['cells'][:2]:
        m = re.match(r'\s*---\n(.*?)\n---', _src(cell), flags=re.S)
        if cell['cell_type'] == 'raw' and m: return yaml.safe_load(m.group(1)) or {}
    return {}


def exported_names(src_nb: dict, lib: Path) -> dict:
    "Exported top-level functions and classes of the notebook's `default_exp` module (from its `__all__`)."
    mods = {m for c in src_nb['cells'] if c['cell_type'] == 'code'
            for m in re.findall(r'^#\|\s*default_exp\s+(\S+)', _src(c), flags=re.M)}
    out = {}
    for mod in mods:
        py = lib / (mod.replace('.', '/') + '.py')
        if not py.exists(): continue
        tree = ast.parse(py.read_text(encoding='utf-8'))
        names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, 'id', '') == '__all__' for t in n.targets)), [])
        for n in tree.body:
            if not isinstance(n, (ast.FunctionDef, ast.ClassDef)) or n.name not in names: continue
            if isinstance(n, ast.FunctionDef): out[n.name] = 'def'
            elif any('dataclass' in ast.unparse(d) for d in n.decorator_list) or any('NamedTuple' in ast.unparse(b) for b in n.bases):
                out[n.name] = 'dataclass'
            elif not any(isinstance(f, ast.FunctionDef) and f.name == '__init__' for f in n.body): out[n.name] = 'class without own __init__'
            else: out[n.name] = 'class'
    return out


MATH_RE = re.compile(r'(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$|\$\$.+?\$\$|\\\(.+?\\\)', flags=re.S)


def has_math(nb: dict, extra: str = '') -> bool:
    text = extra + '\n'.join(_src(c) for c in nb['cells'] if c['cell_type'] == 'markdown')
    return bool(MATH_RE.search(re.sub(r'`[^`]*`', '', text)))


# ---------------------------------------------------------------- rendering
DIRECTIVE_RE = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*)$')


def _apply_directives(nb) -> None:
    "Do what Quarto does with the directives nbdev leaves in processed notebooks (`echo`, `output`, `include`)."
    keep = []
    for cell in nb.cells:
        if cell.cell_type == 'raw' and cell.source.lstrip().startswith('---'): continue  # front matter
        if cell.cell_type == 'markdown' and cell.source.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
        if cell.cell_type == 'code':
            lines = cell.source.splitlines()
            opts = {}
            while lines and DIRECTIVE_RE.match(lines[0]):
                k, v = DIRECTIVE_RE.match(lines.pop(0)).groups()
                opts[k.lower()] = v.strip().lower()
            cell.source = '\n'.join(lines).strip('\n')
            if opts.get('include') == 'false': continue
            tr = cell.metadata.setdefault('transient', {})
            if opts.get('echo') == 'false' or not cell.source.strip(): tr['remove_source'] = True
            if opts.get('output') == 'false': cell.outputs = []
            for o in cell.get('outputs', []):
                data = o.get('data', {})
                data.pop('application/vnd.jupyter.widget-view+json', None)  # no widget front end in a static page
                if 'text/markdown' in data: data['text/markdown'] = _pandoc_attrs(_src({'source': data['text/markdown']}))
        elif cell.cell_type == 'markdown': cell.source = _pandoc_attrs(cell.source)
        keep.append(cell)
    nb.cells = keep


def _pandoc_attrs(md: str) -> str:
    "Turn Pandoc link attributes (`[source](url){target=...}`, which show_doc emits for Quarto) into HTML links."
    return re.sub(r'\[([^\]]+)\]\(([^)\s]+)\)\{[^}]*\}',
                  lambda m: f'<a class="source-link" href="{html.escape(m.group(2))}" target="_blank">{m.group(1)}</a>', md)


def slug(text: str) -> str:
    "Pandoc's (and so Quarto's) heading identifier, which nbdev's doc links point at."
    s = re.sub(r'[^\w\s.-]', '', text.replace('¶', '').strip().lower())
    s = re.sub(r'\s+', '-', s)
    return re.sub(r'^[^a-z]+', '', s) or 'section'


def _md(text: str) -> str:
    from nbconvert.filters import markdown2html
    return markdown2html(text)


def render_body(proc_nb: Path) -> str:
    "The body of one processed notebook as HTML, with nbconvert's `basic` template (no prompts)."
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(proc_nb), as_version=4)
    _apply_directives(nb)
    exp = HTMLExporter(template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True,
                       anchor_link_text='#')
    body, _ = exp.from_notebook_node(nb)
    return body


CHECK_JS = r"""
// Self-check read by tests/docs_check.py: after MathJax finishes, record what a reader would see.
(function () {
  function rawMath() {
    var out = [], w = document.createTreeWalker(document.getElementById('content') || document.body, NodeFilter.SHOW_TEXT);
    while (w.nextNode()) {
      var n = w.currentNode, p = n.parentElement;
      if (p.closest('pre, code, script, style, .MathJax, .MathJax_Display, .MathJax_Preview')) continue;
      var m = n.nodeValue.match(/\$[^$\s][^$]*\$|\\\(.+?\\\)/);
      if (m) out.push(m[0].slice(0, 60));
    }
    return out;
  }
  function finish() {
    var r = {title: document.title, h1: (document.querySelector('h1') || {}).textContent || '',
      images: Array.prototype.map.call(document.images, function (i) {
        return {src: i.getAttribute('src').slice(0, 60), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}; }),
      mathjax: !!(window.MathJax && window.MathJax.Hub),
      math_scripts: document.querySelectorAll('script[type^="math/tex"]').length,
      math_rendered: document.querySelectorAll('.MathJax, .MathJax_Display').length,
      math_errors: document.querySelectorAll('.MathJax_Error, .MathJax merror').length,
      raw_math: rawMath()};
    var s = document.createElement('script'); s.type = 'application/json'; s.id = 'docs-check-result';
    s.textContent = JSON.stringify(r); document.body.appendChild(s);
  }
  window.addEventListener('load', function () {
    if (window.MathJax && window.MathJax.Hub) window.MathJax.Hub.Queue(finish); else finish();
  });
})();
"""

MATHJAX_CONFIG = r"""
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]], processEscapes: true},
  TeX: {extensions: ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"]},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  messageStyle: "none", showMathMenu: false
});
"""

SITE_CSS = r"""
:root { --primary: #2780e3; --text: #343a40; --muted: #6c757d; --line: #dee2e6; --code-bg: #f8f9fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--text); font: 17px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans", "Liberation Sans", Arial, sans-serif; }
a { color: var(--primary); text-decoration: none; } a:hover { text-decoration: underline; }
header.navbar { background: var(--primary); color: #fff; display: flex; align-items: center; gap: 1.4rem; padding: .7rem 1.5rem; }
header.navbar a { color: rgba(255,255,255,.85); } header.navbar a:hover, header.navbar a.active { color: #fff; }
header.navbar .brand { font-size: 1.25rem; font-weight: 500; color: #fff; margin-right: .8rem; }
header.navbar .right { margin-left: auto; }
.layout { display: grid; grid-template-columns: 250px minmax(0, 860px) 210px; gap: 2.2rem; max-width: 1400px; margin: 0 auto; padding: 1.6rem 1.5rem 4rem; }
nav.sidebar { font-size: .92rem; position: sticky; top: 1rem; align-self: start; }
nav.sidebar a { display: block; padding: .28rem .6rem; color: var(--text); border-radius: 4px; }
nav.sidebar a.active { color: var(--primary); background: #e9f2fc; font-weight: 500; }
nav.toc { font-size: .85rem; position: sticky; top: 1rem; align-self: start; border-left: 1px solid var(--line); padding-left: .9rem; }
nav.toc h2 { font-size: .9rem; margin: 0 0 .4rem; } nav.toc a { display: block; color: var(--muted); padding: .12rem 0; }
main h1.title { font-size: 2.3rem; font-weight: 500; margin: .2rem 0 .3rem; }
div.description { padding-left: 2px; padding-top: 5px; font-style: italic; font-size: 135%; opacity: 70%; margin-bottom: 1.6rem; }
div.description p { margin: 0; }
main h2 { font-size: 1.6rem; font-weight: 500; margin-top: 2.2rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
main h3 { font-size: 1.3rem; font-weight: 500; margin-top: 1.5rem; }
a.anchor-link { visibility: hidden; margin-left: .3rem; font-size: .8em; color: var(--muted); }
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link { visibility: visible; }
.cell { margin-bottom: 1rem; }
div.input_area div.highlight { background: var(--code-bg); border-radius: 4px; border-left: 3px solid #c9d7e8; }
pre { margin: 0; padding: .6rem .8rem; overflow-x: auto; font: 14px/1.45 "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; }
code { font: .9em "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; color: #9753b8; }
pre code, .highlight code { color: inherit; }
.output_area pre { background: none; border-left: 2px solid lightsalmon; margin-left: .8rem; }
.output_area { margin-top: .2rem; } .output_png img, .output_area img { max-width: 100%; height: auto; margin-left: .8rem; }
.output_stderr pre { background: #fff3f0; }
.output_markdown hr, .output_html hr { border: 0; border-top: 1px solid var(--line); margin: 1.8rem 0 .6rem; }
.output_markdown .highlight { background: var(--code-bg); border-radius: 4px; }
.output_markdown h3 { margin-top: .4rem; font-family: "SFMono-Regular", Menlo, Consolas, monospace; font-size: 1.15rem; }
a.source-link { float: right; font-size: smaller; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .7rem; text-align: left; } th { border-bottom: 2px solid var(--line); }
.pages dt { font-weight: 500; margin-top: .6rem; } .pages dd { margin: 0 0 .2rem 0; color: var(--muted); font-style: italic; }
.pages dd p { margin: 0; }
blockquote { border-left: 3px solid var(--line); margin: 1rem 0; padding: .1rem 1rem; color: var(--muted); }
.MathJax_Display { overflow-x: auto; overflow-y: hidden; }
@media (max-width: 1100px) { .layout { grid-template-columns: 220px minmax(0, 1fr); } nav.toc { display: none; } }
"""


def _pygments_css() -> str:
    from pygments.formatters import HtmlFormatter
    return HtmlFormatter(style='default').get_style_defs('.highlight')


def copy_mathjax(out: Path) -> Path:
    "Copy the MathJax 2 that `jupyter-server-mathjax` ships (its combined TeX/HTML-CSS config, STIX fonts) to `out/mathjax`."
    import jupyter_server_mathjax
    src = Path(jupyter_server_mathjax.__file__).parent / 'static'
    dst = out / 'mathjax'
    if dst.exists(): shutil.rmtree(dst)
    skip = {src: {'localization'}, src / 'jax' / 'output': {'SVG'}}  # other languages; the SVG output is not shipped whole
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in skip.get(Path(d), ())])
    return dst


def page_html(*, site_title: str, page: Page | None, title: str, description: str, body: str,
              navbar: list, right: list, sidebar: list, current: str, css_files: list) -> str:
    "Wrap a rendered body in the site's shell: navbar, sidebar, title block, table of contents."
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(body, 'html.parser')
    for h in soup.find_all(['h2', 'h3', 'h4']):   # Quarto-style ids, which nbdev's doc links use
        new = slug(h.get_text())
        for a in h.find_all('a', class_='anchor-link'): a['href'] = '#' + new
        h['id'] = new
    toc = [(h['id'], h.get_text().replace('#', '').strip()) for h in soup.find_all('h2')]
    nav = ''.join(f'<a href="{html.escape(href)}"{" class=active" if href == current else ""}>{html.escape(text)}</a>'
                  for text, href in navbar)
    rnav = ''.join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in right)
    side = ''.join(f'<a href="{html.escape(href)}"{" class=active" if href == current else ""}>{html.escape(text)}</a>'
                   for text, href in sidebar)
    toc_html = ('<nav class="toc"><h2>On this page</h2>' + ''.join(
        f'<a href="#{i}">{html.escape(t)}</a>' for i, t in toc) + '</nav>') if toc else '<nav class="toc"></nav>'
    css = ''.join(f'<link rel="stylesheet" href="{c}">' for c in css_files)
    head_title = f'{title} – {site_title}' if title and title != site_title else site_title
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(head_title)}</title>
<style>{SITE_CSS}
{_pygments_css()}</style>{css}
<script type="text/x-mathjax-config">{MATHJAX_CONFIG}</script>
<script src="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"></script>
<script>{CHECK_JS}</script>
</head><body>
<header class="navbar"><a class="brand" href="index.html">{html.escape(site_title)}</a>{nav}<span class="right">{rnav}</span></header>
<div class="layout"><nav class="sidebar">{side}</nav>
<main id="content"><h1 class="title">{html.escape(title)}</h1>
<div class="description">{_md(description) if description else ''}</div>
{soup}
</main>{toc_html}</div>
</body></html>"""


def _rewrite_links(doc: str, base: str, nb2page: dict) -> str:
    "Links to the published site and to notebooks point at the local pages instead."
    def fix(m):
        href = html.unescape(m.group(2))
        if base and href.startswith(base): href = href[len(base):].lstrip('/') or 'index.html'
        path, _, frag = href.partition('#')
        if path in nb2page: href = nb2page[path] + (f'#{frag}' if frag else '')
        return f'{m.group(1)}"{html.escape(href)}"'
    return re.sub(r'(<a\s[^>]*?href=)"([^"]*)"', fix, doc)


def build_site(proc: Path, out: Path, report: dict) -> tuple[list[Page], list[str]]:
    "Render every processed notebook into `out`; return the pages and the site-level problems."
    from nbdev.config import get_config
    from nbdev.doclinks import _nbpath2html
    cfg = get_config(path=ROOT)
    nbs = cfg.nbs_path
    site_problems = []
    failures = {s: r['error'] for s, r in report.items() if r['error']}
    quarto = yaml.safe_load((proc / '_quarto.yml').read_text()) if (proc / '_quarto.yml').exists() else {}
    if not quarto: site_problems.append('_proc/_quarto.yml is missing: the site configuration did not reach the processed docs')
    website = quarto.get('website', {})
    site_title = website.get('title') or cfg.title
    order = _flatten((yaml.safe_load((proc / 'sidebar.yml').read_text()) or {}).get('website', {}).get('sidebar', {}).get('contents', [])) \
        if (proc / 'sidebar.yml').exists() else []
    sources = sorted(report)
    rel = [str(s.relative_to(nbs)) for s in sources]
    for r in rel:
        if r not in order: site_problems.append(f'{r} is not in the sidebar (_proc/sidebar.yml)')
    ordered = [nbs / r for r in order if r in rel] + [s for s in sources if str(s.relative_to(nbs)) not in order]

    pages = []
    for s in ordered:
        r = s.relative_to(nbs)
        src_nb = read_nb(s)
        p_path = proc / r
        fm = frontmatter(read_nb(p_path)) if p_path.exists() and s not in failures else {}
        name = fm.get('output-file') or _nbpath2html(r).name  # what nbdev's front matter would have said
        title, desc = title_and_description(src_nb)
        pg = Page(src=s, proc=p_path if s not in failures else None, name=name.replace('/', '_'), title=title,
                  description=desc, has_math=has_math(src_nb, desc), exported=exported_names(src_nb, cfg.lib_path))
        if s in failures: pg.problems.append(f'nbdev processing failed: {failures[s]}')
        pg.seconds = report[s]['seconds']
        pg.warnings += [_nbdev_warning(w) for w in dict.fromkeys(report[s]['warnings'])]
        if not title: pg.problems.append('no `# Title` markdown cell at the top of the notebook')
        elif fm and fm.get('title') != title: pg.problems.append(f'processed title {fm.get("title")!r} != notebook title {title!r}')
        if s.name != 'index.ipynb' and not desc: pg.problems.append('no `> description` line under the title')
        pages.append(pg)
    nb2page = {str(p.src.relative_to(nbs)): p.name for p in pages}

    navbar = []
    for item in website.get('navbar', {}).get('left', []):
        href = item.get('href', '')
        if href in nb2page: navbar.append((item.get('text', href), nb2page[href]))
        else: site_problems.append(f'_quarto.yml navbar entry {item.get("text")!r} points at {href!r}, which is not a notebook in nbs/')
    right = [(item.get('text') or item.get('icon', 'link').title().replace('Github', 'GitHub'), item['href'])
             for item in website.get('navbar', {}).get('right', []) if 'href' in item]
    sidebar = [(p.title or p.src.stem, p.name) for p in pages]

    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    css_files = []
    for f in proc.rglob('*'):  # styles.css, images and other files nbdev copied next to the notebooks
        if f.is_file() and f.suffix not in ('.ipynb', '.yml', '.yaml'):
            (out / f.relative_to(proc)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out / f.relative_to(proc))
            if f.suffix == '.css': css_files.append(str(f.relative_to(proc)))
    base = f'{cfg.doc_host}{cfg.doc_baseurl}'.rstrip('/') + '/'
    shell = dict(site_title=site_title, navbar=navbar, right=right, sidebar=sidebar, css_files=css_files)

    listing = '<h2>Pages</h2><dl class="pages">' + ''.join(
        f'<dt><a href="{p.name}">{html.escape(p.title or p.src.stem)}</a></dt><dd>{_md(p.description) if p.description else ""}</dd>'
        for p in pages if p.name != 'index.html') + '</dl>'
    home = next((p for p in pages if p.name == 'index.html'), None)
    for pg in pages:
        body = ''
        if pg.proc is not None:
            try: body = render_body(pg.proc)
            except Exception as e: pg.problems.append(f'nbconvert could not render it: {type(e).__name__}: {e}')
        if pg is home: body += listing
        doc = page_html(page=pg, title=pg.title, description=pg.description, body=body, current=pg.name, **shell)
        (out / pg.name).write_text(_rewrite_links(doc, base, nb2page), encoding='utf-8')
    if home is None:  # no index notebook: the home page is the listing alone
        doc = page_html(page=None, title=site_title, description=website.get('description', ''), body=listing,
                        current='index.html', **shell)
        (out / 'index.html').write_text(_rewrite_links(doc, base, nb2page), encoding='utf-8')
    return pages, site_problems


def _nbdev_warning(w: str) -> str:
    if w.startswith('Found cells containing imports and other code'):
        return f'a cell mixes imports with other code, so nbdev runs all of it to build the docs (see nbdev FAQ): `{w.split(": ", 1)[-1]}`'
    return f'nbdev: {w}'


def _flatten(contents) -> list[str]:
    res = []
    for c in contents:
        if isinstance(c, str): res.append(c)
        elif isinstance(c, dict):
            if 'href' in c: res.append(c['href'])
            res += _flatten(c.get('contents', []))
    return res


# ---------------------------------------------------------------- the browser
def chromium(args: list, timeout: int = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix='docs-check-chromium-') as prof:
        return subprocess.run([str(CHROMIUM), *CHROME_FLAGS, f'--user-data-dir={prof}', *args],
                              capture_output=True, text=True, timeout=timeout)


def dump_dom(page: Path) -> str:
    return chromium(['--virtual-time-budget=5000', '--dump-dom', page.resolve().as_uri()]).stdout


def screenshot(page: Path, png: Path) -> bool:
    chromium(['--virtual-time-budget=5000', f'--screenshot={png}', '--window-size=1280,2000', page.resolve().as_uri()])
    return png.exists() and png.stat().st_size > 0


def check_dom(pg: Page, dom: str, all_ids: dict) -> None:
    "Compare what the browser shows with what the notebook promises; append to `pg.problems` / `pg.warnings`."
    from bs4 import BeautifulSoup
    m = re.search(r'<script type="application/json" id="docs-check-result">(.*?)</script>', dom, flags=re.S)
    if not m: pg.problems.append('the page did not finish loading in Chromium (no self-check result)'); return
    r = json.loads(html.unescape(m.group(1)) if '&quot;' in m.group(1) else m.group(1))
    if pg.proc is None:  # processing failed: the page is the title alone, nothing else to check
        if pg.title and r['h1'].strip() != pg.title: pg.problems.append(f'<h1> {r["h1"]!r} != notebook title {pg.title!r}')
        return
    if pg.title and pg.title not in r['title']: pg.problems.append(f'<title> {r["title"]!r} lacks the notebook title {pg.title!r}')
    if pg.title and r['h1'].strip() != pg.title: pg.problems.append(f'<h1> {r["h1"]!r} != notebook title {pg.title!r}')
    bad = [i['src'] for i in r['images'] if not i['ok']]
    if bad: pg.problems.append(f'{len(bad)} of {len(r["images"])} images did not load: {bad[:3]}')
    if pg.has_math:
        if not r['mathjax']: pg.problems.append('MathJax did not load')
        elif r['math_rendered'] == 0: pg.problems.append('the page has $...$ math but MathJax typeset none of it')
    if r['raw_math']: pg.problems.append(f'raw TeX left untypeset: {r["raw_math"][:3]}')
    if r['math_errors']: pg.problems.append(f'{r["math_errors"]} MathJax errors')

    soup = BeautifulSoup(dom, 'html.parser')
    content = soup.find(id='content') or soup
    text = content.get_text('\n')
    if 'Traceback (most recent call last)' in text or content.select('.output_error'):
        pg.problems.append('a Python traceback / error output is shown')
    stderr = [e.get_text()[:100].strip() for e in content.select('.output_stderr')]
    if stderr: pg.warnings.append(f'{len(stderr)} stderr output(s), e.g. {stderr[0]!r}')

    heads = {h.get_text().replace('#', '').strip(): h for h in content.find_all('h3')}
    for name, kind in pg.exported.items():
        h = heads.get(name)
        if h is None: pg.problems.append(f'exported {kind} `{name}` has no show_doc section'); continue
        block = h.find_next(['pre'])
        sig = block.get_text() if block else ''
        if not re.search(rf'\b(def|class)\s+{re.escape(name)}\b', sig):
            pg.problems.append(f'show_doc of `{name}` shows no signature'); continue
        doc = block.find_next('em') if block else None
        if doc is None or doc.find_previous('h3') is not h: pg.problems.append(f'`{name}` has no docstring')
        lines = sig.strip().splitlines()
        params = [l.strip() for l in lines[1:] if l.strip() and not l.strip().startswith(')')]
        undocumented = [l for l in params if '#' not in l and not l.startswith('*')  # *args/**kwargs may stay bare
                        and not re.match(r'\w+\s*:\s*Param\(', l)]  # fastcore's `Param('help', ...)` documents it
        if undocumented:
            msg = f'`{name}` parameters without docments comments: {"; ".join(undocumented)[:120]}'
            if kind == 'def' or kind == 'class': pg.problems.append(msg)
            else: pg.warnings.append(f'{msg} ({kind}: show_doc cannot show comments on its fields/inherited __init__)')
        elif params == ['*args, **kwargs']: pg.warnings.append(f'`{name}` shows the signature `(*args, **kwargs)`')

    for a in content.find_all('a', href=True):  # links between local pages
        href = a['href']
        if re.match(r'^[a-z]+:', href) or href.startswith('#') and not href[1:]: continue
        path, _, frag = href.partition('#')
        target = path or pg.name
        if target not in all_ids: pg.problems.append(f'broken link to {href!r}'); continue
        if frag and frag not in all_ids[target]: pg.warnings.append(f'link to {href!r}: no such anchor')


def _ids(path: Path) -> set:
    return set(re.findall(r'\sid="([^"]+)"', path.read_text(encoding='utf-8')))


# ---------------------------------------------------------------- main
def run(out: Path, workers: int = 2, force: bool = True, timeout: int = NB_TIMEOUT, log=print) -> int:
    "The whole check; returns the number of failures."
    t0 = time.time()
    proc, report = process_notebooks(workers=workers, force=force, timeout=timeout)
    t1 = time.time()
    log(f'nbdev processing: {t1 - t0:.1f} s -> {proc}')
    pages, site_problems = build_site(proc, out, report)
    t2 = time.time()
    log(f'rendering {len(pages)} pages with nbconvert: {t2 - t1:.1f} s -> {out}')
    all_ids = {p.name: _ids(out / p.name) for p in out.glob('*.html')}
    todo = [out / 'index.html'] + [out / p.name for p in pages if p.name != 'index.html']
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        doms = dict(zip(todo, ex.map(dump_dom, todo)))
    by_name = {p.name: p for p in pages}
    for path, dom in doms.items():
        if path.name in by_name: check_dom(by_name[path.name], dom, all_ids)
        elif 'docs-check-result' not in dom: site_problems.append('the home page did not load in Chromium')
    shots = [('home.png', out / 'index.html')]
    theory = next((p for p in pages if p.src.name == SCREENSHOT_NB), None)
    if theory: shots.append((Path(theory.name).stem + '.png', out / theory.name))
    else: site_problems.append(f'no page for nbs/{SCREENSHOT_NB} to take a screenshot of')
    for png, page in shots:
        if not screenshot(page, out / png): site_problems.append(f'screenshot {png} failed')
    t3 = time.time()
    log(f'Chromium checks and screenshots: {t3 - t2:.1f} s')

    n_fail = len(site_problems) + sum(len(p.problems) for p in pages)
    log(f'\n{"page":28} {"notebook":30} {"nbdev s":>7} {"imgs":>4}  status')
    for p in pages:
        status = 'ok' if not p.problems else 'FAIL'
        n_img = len(re.findall(r'<img\s', (out / p.name).read_text())) if (out / p.name).exists() else 0
        secs = f'{p.seconds:.1f}' if p.seconds is not None else 'cached'
        log(f'{p.name:28} {p.src.name:30} {secs:>7} {n_img:>4}  {status}' + (f' ({len(p.warnings)} warnings)' if p.warnings else ''))
        for x in p.problems: log(f'    FAIL  {x}')
        for x in dict.fromkeys(p.warnings): log(f'    warn  {x}')
    for x in site_problems: log(f'site FAIL  {x}')
    log(f'\nscreenshots: {", ".join(str(out / s) for s, _ in shots)}')
    log(f'{len(pages)} pages, {n_fail} failures, {sum(len(p.warnings) for p in pages)} warnings, {t3 - t0:.1f} s in all')
    return n_fail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', type=Path, default=ROOT / '_docs_check', help='folder for the pages and screenshots')
    ap.add_argument('--workers', type=int, default=2, help='processes for notebook processing and the browser')
    ap.add_argument('--cached', action='store_true', help="reuse _proc/ entries newer than their notebooks (nbdev's cache)")
    ap.add_argument('--timeout', type=int, default=NB_TIMEOUT, help='seconds nbdev may spend on one notebook')
    ap.add_argument('--process-only', action='store_true', help='only run the nbdev processing into _proc/ (no browser)')
    a = ap.parse_args(argv)
    if a.process_only:
        proc, report = process_notebooks(workers=a.workers, force=not a.cached, timeout=a.timeout)
        for s, r in report.items(): print(f'{s.name:32} {r["seconds"] or 0:6.1f} s  {r["error"] or "ok"}')
        return 1 if any(r['error'] for r in report.values()) else 0
    if not CHROMIUM.exists(): print(f'{CHROMIUM} not found: install Debian\'s chromium package'); return 2
    return 1 if run(a.out.resolve(), workers=a.workers, force=not a.cached, timeout=a.timeout) else 0


if __name__ == '__main__':
    sys.exit(main())
