"""mkdocs hook: pages and files generated at build time, from the repository itself.

* ``reference/cli.md``: the CLI reference, from ``gpu_deconv.cli._parser()`` (every subcommand,
  its usage line and a table of its options with their defaults), so it cannot drift from the
  program.
* ``assets/vm-2026-11-24.png``: the benchmark chart, which lives in ``benchmarks/results/``.

Nothing is fetched: the build stays offline.
"""

from __future__ import annotations

import argparse
import html
import os
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
CLI_PAGE = "reference/cli.md"
COPIED = {"assets/vm-2026-11-24.png": ROOT / "benchmarks/results/vm-2026-11-24.png"}
WIDTH = "80"  # columns of the usage lines, whatever the terminal


def on_files(files: Files, config: Any) -> Files:
    """Add the CLI reference and the copied images to the site's files."""
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    for uri, source in COPIED.items():
        files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files


def cli_reference() -> str:
    """Return the CLI reference page as Markdown, from the parser ``gpu-deconv`` runs."""
    from gpu_deconv.cli import _parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps usage lines to the terminal's width
    try:
        parser = _parser()
        lines = [
            "# Command-line reference",
            "",
            "Generated from `gpu-deconv`'s own argument parser when this site is built: every",
            "subcommand with its options and defaults (`gpu-deconv SUBCOMMAND --help` prints the",
            "same). [Command line](../guide/command-line.md) shows them by task.",
            "",
        ]
        lines += _command(parser, parser.prog, level=2)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(lines) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _command(parser: argparse.ArgumentParser, name: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{name}`", ""]
    if parser.description:
        lines += [_text(parser.description), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = [_row(parser, action) for action in parser._actions if _documented(action)]
    if rows:
        lines += ["| option | description |", "|---|---|", *rows, ""]
    subcommands = _subcommands(parser)
    summaries = _summaries(parser)
    if subcommands:
        lines += ["| subcommand | what it does |", "|---|---|"]
        lines += [f"| `{sub}` | {_text(summaries.get(sub, ''))} |" for sub in subcommands]
        lines.append("")
    for sub, subparser in subcommands.items():
        lines += _command(subparser, f"{name} {sub}", level + (level < 3))
    return lines


def _documented(action: argparse.Action) -> bool:
    return not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and (
        action.help is not argparse.SUPPRESS
    )


def _row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    if action.option_strings:
        metavar = ""
        if action.nargs != 0:
            metavar = " " + formatter._format_args(action, action.dest.upper())
        option = ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)
    else:
        option = f"`{formatter._format_args(action, action.dest)}`"
    help_text = formatter._expand_help(action) if action.help else ""
    default = action.default
    if (
        action.option_strings
        and "default" not in help_text
        and default not in (None, False, argparse.SUPPRESS)
        and not (isinstance(default, (str, Path)) and os.path.isabs(default))
    ):
        help_text += f" (default: {default})"
    if action.required and action.option_strings:
        help_text += " (required)"
    return f"| {option} | {_text(help_text)} |"


def _text(text: str) -> str:
    """Escape a help string for a Markdown table cell (and for HTML)."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")
