"""The README's and the documentation's Python examples run as written.

Every ```python block of README.md and of docs/**/*.md runs, each in a fresh namespace as
``__main__``. Blocks fenced as ```py are shown on the site but not run (none needs that today).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
CLESPERANTO = "pyclesperanto_prototype"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
README_MAX_LINES = 300


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def run_blocks(path: Path) -> int:
    ran = 0
    for block in python_blocks(path):
        if CLESPERANTO in block and not importlib.util.find_spec(CLESPERANTO):
            continue  # run by tests/test_clesperanto.py, in its own environment
        exec(compile(block, str(path), "exec"), {"__name__": "__main__"})
        ran += 1
    return ran


def test_readme_python_blocks_run(capsys):
    assert python_blocks(README)
    assert run_blocks(README)
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_docs_python_blocks_run(page, capsys):
    if run_blocks(page):
        assert capsys.readouterr().out.strip(), "every page's examples print what they show"


def test_docs_have_examples():
    assert PAGES and sum(len(python_blocks(page)) for page in PAGES) >= 10


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    # Its relative links (the documentation's pages, images) point at files that exist.
    links = re.findall(r"\]\(((?!https?:|#)[^)#\s]+)(?:#[^)]*)?\)", text)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_api_reference_shows_every_public_name():
    import types

    import gpu_deconv

    page = (DOCS / "reference" / "api.md").read_text()
    names = [
        n for n in gpu_deconv.__all__ if not isinstance(getattr(gpu_deconv, n), types.ModuleType)
    ]
    missing = [n for n in names if f"::: gpu_deconv.{n}\n" not in page]
    assert not missing, f"add them to docs/reference/api.md: {missing}"


def test_example_script_runs(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "tutorial.py"
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if "iterations: MSE" in ln]
    mse = [float(ln.split("MSE ")[1].split(",")[0]) for ln in lines]
    assert len(mse) == 4 and mse == sorted(mse, reverse=True)
    assert (tmp_path / "tutorial_example.png").stat().st_size > 0
