"Project-level checks: README agrees with index.ipynb and .ci/run, one _quarto.yml drives the docs."
import re, configparser
from pathlib import Path
from readme_tool import render_readme, ROOT


def readme_commands():
    text = (ROOT / 'README.md').read_text()
    blocks = re.findall(r'```sh\n(.*?)\n```', text, flags=re.S)
    return text, blocks


def test_readme_is_generated_from_index():
    assert (ROOT / 'README.md').read_text() == render_readme(), 'README.md is stale: run `python tests/readme_tool.py`'


def test_readme_has_install_and_test_commands_that_ci_runs():
    _, blocks = readme_commands()
    install, test = blocks[0].strip(), blocks[1].strip()
    assert install == 'pip install -e ".[dev]"'
    ci = (ROOT / '.ci' / 'run').read_text().splitlines()
    # .ci/run runs exactly the README's two commands
    assert ci[ci.index('# README install command:') + 1].strip() == install
    assert ci[ci.index('# README test command:') + 1].strip() == test


def test_single_quarto_config_at_top_level():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    d = cfg['DEFAULT']
    assert d['nbs_path'] == 'nbs'
    link = ROOT / 'nbs' / '_quarto.yml'
    assert link.is_symlink() and link.resolve() == (ROOT / '_quarto.yml').resolve()


def test_nbdev_keeps_our_quarto_config(tmp_path, monkeypatch):
    "nbdev's own config refresh (run by nbdev_docs/nbdev_preview) must not overwrite the top-level file."
    from nbdev.quarto import refresh_quarto_yml
    before = (ROOT / '_quarto.yml').read_text()
    monkeypatch.chdir(ROOT)
    refresh_quarto_yml()
    assert (ROOT / '_quarto.yml').read_text() == before
    assert (ROOT / 'nbs' / '_quarto.yml').is_symlink()
    assert 'multistage_nbdev' in (ROOT / 'nbs' / 'nbdev.yml').read_text()


def _rounded(text: str) -> str:
    "The text with every decimal number rounded to 4 places, so last-bit differences between CPUs do not count."
    return re.sub(r'-?\d+\.\d+(e-?\d+)?', lambda m: f'{float(m[0]):.4f}', text)


def test_readme_python_block_runs_as_written():
    "The README's Python block, run as written, ends with the value the README shows below it."
    import contextlib, io, torch
    text = (ROOT / 'README.md').read_text()
    code, shown = re.search(r'```python\n(.*?)\n```\n\n```\n(.*?)\n```', text, flags=re.S).groups()
    *body, last = code.strip().splitlines()
    env, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stderr(io.StringIO()): exec('\n'.join(body), env)
        value = eval(last, env)
    finally: torch.set_num_threads(threads)
    from IPython.lib.pretty import pretty
    assert _rounded(pretty(value)) == _rounded(shown), f'the README shows\n{shown}\nbut the block gives\n{pretty(value)}'
