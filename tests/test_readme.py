"""README.md is the front page: the two commands, a tour whose every `emer` command the real parser
accepts, and links that reach the guide and reference pages (each page one click away)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from emer_builder.cli.main import parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _commands(text: str) -> list[list[str]]:
    """Every `emer ...` line of the README's bash blocks (continuations joined), as argv after `emer`."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("emer "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_readme_gives_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert len(text.splitlines()) < 250  # a front page; the rest lives in docs/


def test_every_tour_command_is_accepted_by_the_parser():
    commands = _commands(README.read_text())
    assert {c[0] for c in commands} >= {"build", "publish", "download", "evaluate"}
    for argv in commands:
        argv = argv[: argv.index("--")] if "--" in argv else argv  # after `--`: Beam's options
        args = parser().parse_args(argv)
        assert callable(args.func), argv


def test_every_link_reaches_a_page_and_every_page_is_linked():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links and all((ROOT / link).is_file() for link in links if not link.startswith("http")), links
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*/*.md")}
    assert pages <= set(links), sorted(pages - set(links))  # one click from the front page to every page
