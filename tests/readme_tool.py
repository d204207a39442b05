"""Build README.md from nbs/index.ipynb without Quarto (`nbdev_readme` needs it).

Usage: `python tests/readme_tool.py` rewrites README.md; `tests/test_project.py` checks that the two agree.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _from_root(md: str) -> str:
    "Relative links of the index page point into nbs/ (where the page lives); the README sits one folder up."
    return re.sub(r'\]\((?!https?:|#|/)([^)]+)\)', r'](nbs/\1)', md)


def render_readme(nb_path: Path = ROOT / 'nbs' / 'index.ipynb') -> str:
    "Markdown for the README: markdown cells as they are, code cells fenced (not those marked `#| echo: false`), plain-text outputs fenced below them."
    nb = json.loads(Path(nb_path).read_text())
    out = ['<!-- Generated from nbs/index.ipynb by `python tests/readme_tool.py`: edit the notebook, not this file. -->\n']
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        if cell['cell_type'] == 'markdown':
            out.append(_from_root(src.strip()) + '\n')
            continue
        lines = [l for l in src.splitlines() if not re.match(r'\s*#\s*\|', l)]
        directives = [l for l in src.splitlines() if re.match(r'\s*#\s*\|', l)]
        if any('hide' in l for l in directives) or not ''.join(lines).strip(): continue
        if not any(re.search(r'echo:\s*false', l) for l in directives):  # Quarto's `#| echo: false`: output only
            out.append('```python\n' + '\n'.join(lines).strip() + '\n```\n')
        for o in cell.get('outputs', []):
            if 'image/png' in o.get('data', {}): continue  # a figure's text/plain is only its repr
            text = o.get('text') or o.get('data', {}).get('text/plain')
            if text: out.append('```\n' + ''.join(text).rstrip() + '\n```\n')
    return '\n'.join(out)


if __name__ == '__main__':
    target = ROOT / 'README.md'
    target.write_text(render_readme())
    print(f'wrote {target}', file=sys.stderr)
