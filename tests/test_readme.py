"""The README's Python example runs as written."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CLESPERANTO = "pyclesperanto_prototype"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        if "pyclesperanto_prototype" in block and not importlib.util.find_spec(CLESPERANTO):
            continue  # run by tests/test_clesperanto.py, in its own environment
        exec(compile(block, str(README), "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip()


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
