"""Griffe extension: reStructuredText roles of the docstrings, shown as Markdown code.

gpu_deconv's numpy-style docstrings cross-reference with Sphinx roles (``:func:`name```,
``:class:`~a.b.C```) and write formulas with ``:math:`` and ``.. math::``. mkdocstrings renders
Markdown, where those would show as raw text: here each role becomes a code span of its target
(the last component after a ``~``) and each ``.. math::`` directive a fenced block of its
formula. The docstrings themselves stay as they are (pydoc, IDEs and Sphinx read them too).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|exc|obj|const|math):`(~?)([^`]+)`")
MATH = re.compile(
    r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)\n"  # the directive and its first line
    r"(?P<rest>(?:(?P=indent)[ \t]+.*\n|[ \t]*\n)*)",  # lines indented deeper, blank lines
    re.M,
)


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _math(match: re.Match[str]) -> str:
    indent = match["indent"]
    body = [match["first"].strip()] + [line.strip() for line in match["rest"].splitlines()]
    formula = "\n".join(line for line in body if line)
    lines = "".join(f"{indent}{line}\n" for line in formula.splitlines())
    return f"{indent}```text\n{lines}{indent}```\n\n"


def markdown(text: str) -> str:
    """Return ``text`` with its reST roles and math directives as Markdown code."""
    return ROLE.sub(_role, MATH.sub(_math, text))


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring once the package is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s own docstring (aliases share their target's)."""
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the package's own docstring (``on_object`` does not visit the root)."""
        self.on_object(obj=pkg)
