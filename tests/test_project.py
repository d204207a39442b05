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


def _literal_defaults(obj) -> dict:
    "Parameter (or dataclass field) -> whether its default is written as a literal, read from the source of `obj`."
    import ast, inspect, textwrap
    node = ast.parse(textwrap.dedent(inspect.getsource(obj))).body[0]
    is_literal = lambda d: isinstance(d, (ast.Constant, ast.Tuple, ast.UnaryOp)) and all(
        isinstance(n, (ast.Constant, ast.Tuple, ast.UnaryOp, ast.USub, ast.Load)) for n in ast.walk(d))
    if isinstance(node, ast.ClassDef):
        return {s.target.id: is_literal(s.value) for s in node.body if isinstance(s, ast.AnnAssign) and s.value is not None}
    a = node.args
    pos = a.posonlyargs + a.args
    out = {p.arg: is_literal(d) for p, d in zip(pos[len(pos) - len(a.defaults):], a.defaults)}
    out |= {p.arg: is_literal(d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None}
    return out


def test_each_training_setting_is_defined_once():
    """Every default of a training setting is written once: in `TrainConfig` (fit's settings) or `MainJob` (the main job's);
    fit, msd_train, msd_main and the experiment harness refer to those, or to one named table of their own defaults."""
    from dataclasses import fields
    from multistage_nbdev import train, cli, experiment, pipeline
    training = set(train.TrainConfig.defaults())
    job = {f.name for f in fields(pipeline.MainJob)}
    own = {'MainJob': {'iters', 'time_sampling'},  # the main job's own length and recipe, not fit's defaults
           'train_cli': {'resume', 'compile'}}     # command-line flags
    takers = [(cli.train_cli, training), (experiment.Recipe, training), (pipeline.MainJob, training), (cli.main_cli, job)]
    for obj, names in takers:
        written = {k for k, lit in _literal_defaults(obj).items() if lit and k in names} - own.get(obj.__name__, set())
        assert not written, f'{obj.__name__} writes its own default for {sorted(written)}: refer to the one definition'
    import inspect
    fit_own = [p for p in inspect.signature(train.fit).parameters.values() if p.kind != p.KEYWORD_ONLY]
    assert not {p.name for p in fit_own} & training, 'fit defines a setting of TrainConfig itself'
    assert {k: p.default for k, p in inspect.signature(train.fit).parameters.items() if p.kind == p.KEYWORD_ONLY} \
        == train.TrainConfig.defaults()
    # and the check can fail: a literal default is found
    def demo(lr:float=2e-4, batch_size:int=experiment.HARNESS['batch_size']): pass
    assert _literal_defaults(demo) == {'lr': True, 'batch_size': False}


def test_library_lines_within_120_characters():
    "Every line of the generated library stays within 120 characters, except the `__all__` that nbdev_export writes."
    long = []
    for p in sorted((ROOT / 'multistage_nbdev').glob('*.py')):
        if p.name == '_modidx.py': continue
        in_all = False
        for i, line in enumerate(p.read_text().splitlines(), 1):
            in_all = line.startswith('__all__ = ') or (in_all and line.startswith(' ' * 11 + "'"))
            if len(line) > 120 and not in_all: long.append(f"{p.name}:{i} ({len(line)})")
    assert not long, f"lines over 120 characters (shorten them in the notebooks): {', '.join(long)}"


def test_settings_come_grouped():
    "`train_curve`, `run_main` and every private function of the library take at most 12 parameters (settings come grouped)."
    import ast
    over = []
    for p in sorted((ROOT / 'multistage_nbdev').glob('*.py')):
        if p.name == '_modidx.py': continue
        for n in ast.walk(ast.parse(p.read_text())):
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            if n.name not in ('train_curve', 'run_main') and not (n.name.startswith('_') and not n.name.endswith('__')):
                continue
            a = n.args
            k = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - bool(a.args and a.args[0].arg in ('self', 'cls'))
            if k > 12: over.append(f'{p.name}:{n.lineno} {n.name} ({k})')
    assert not over, f"functions with more than 12 parameters (group the settings): {', '.join(over)}"


def test_importing_the_library_changes_no_environment():
    "No module sets environment variables (or thread counts) at import: the CPU settings are explicit calls."
    import subprocess, sys, os
    code = ("import os, importlib, pkgutil, torch\nbefore, n = dict(os.environ), torch.get_num_threads()\n"
            "import multistage_nbdev as m\n"
            "for i in pkgutil.iter_modules(m.__path__): importlib.import_module('multistage_nbdev.' + i.name)\n"
            "ours = lambda env: {k: v for k, v in env.items() if not k.startswith('TORCHINDUCTOR_')}  # torch's own, set "
            "when its compiler is imported\n"
            "print(ours(dict(os.environ)) == ours(before), torch.get_num_threads() == n)")
    env = {k: v for k, v in os.environ.items() if k not in ('ONEDNN_PRIMITIVE_CACHE_CAPACITY', 'LRU_CACHE_CAPACITY')}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ['True', 'True'], out.stdout + out.stderr
