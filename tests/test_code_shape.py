"""The driver stays readable: no function in pipelines/ longer than 60 lines (issue: "plan, then execute")."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
LIMIT = 60


def test_no_function_in_pipelines_is_longer_than_60_lines():
    long = []
    for path in sorted(PIPELINES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > LIMIT:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
    assert len(list(PIPELINES.glob("*.py"))) > 10  # the folder was found
