"""Parsing of ``%%sifmap`` lines and cells.

A line is ``SPEC [options]`` where SPEC is either an expression (``xs``:
function form) or ``TARGET in EXPR`` (body form). Options start at the first
``-x`` / ``--name`` token outside brackets and strings, so expressions may
contain ``-``, spaces and ``in``.
"""

from __future__ import annotations

import ast
import re

_OPTION = re.compile(r"--?[A-Za-z][\w-]*(?==|\s|$)")


def split_options(line: str) -> tuple[str, str]:
    """'x in range(-3, 3) -o ys' -> ('x in range(-3, 3)', '-o ys')."""
    depth = 0
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "-" and depth == 0 and (i == 0 or line[i - 1].isspace()):
            if _OPTION.match(line, i):
                return line[:i].strip(), line[i:].strip()
        i += 1
    return line.strip(), ""


def body_form(spec: str) -> tuple[str, str] | None:
    """('x', 'xs') if ``spec`` is 'x in xs' (any assignment target), else None."""
    try:
        tree = ast.parse(f"for {spec}:\n    pass")
    except SyntaxError:
        return None
    loop = tree.body[0]
    assert isinstance(loop, ast.For)
    return ast.unparse(loop.target), ast.unparse(loop.iter)


def make_body_function(target: str, body: str, filename: str, namespace: dict) -> object:
    """Build ``def __sifmap_body__(item): TARGET = item; BODY`` where the last
    expression of BODY is returned, compiled under ``filename`` (so tracebacks
    point at the cell's own lines) with ``namespace`` as its globals."""
    module = ast.parse(body, filename=filename)
    stmts = module.body
    if stmts and isinstance(stmts[-1], ast.Expr):
        last = stmts[-1]
        stmts[-1] = ast.copy_location(ast.Return(value=last.value), last)
    item = "__sifmap_item__"
    assign = ast.parse(f"{target} = {item}").body[0]
    for node in ast.walk(assign):  # place it on line 0 so cell line numbers stay true
        if hasattr(node, "lineno"):
            node.lineno = node.end_lineno = 1
    mod = ast.parse(f"def __sifmap_body__({item}):\n    pass")
    mod.body[0].body = [assign, *(stmts or [ast.Pass()])]  # type: ignore[attr-defined]
    ast.fix_missing_locations(mod)
    ns: dict = {}
    exec(compile(mod, filename, "exec"), namespace, ns)
    fn = ns["__sifmap_body__"]
    fn.__code__ = fn.__code__.replace(co_name="<sifmap cell>")
    fn.__qualname__ = fn.__name__ = "<sifmap cell>"
    return fn


def last_function(cell: str) -> str | None:
    """Name of the last function defined at the top level of ``cell``."""
    try:
        tree = ast.parse(cell)
    except SyntaxError:
        return None
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    return names[-1] if names else None
