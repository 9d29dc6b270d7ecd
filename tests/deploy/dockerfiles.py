"""Just enough of Dockerfile and .dockerignore syntax to check ours without
Docker: instructions with their continuation lines joined, and the
.dockerignore matcher's rule (patterns in order, the last one that matches
a path or one of its parent directories decides, `!` lets back in)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, COPY ...
    arguments: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    instructions = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    assert not pending, f"{path}: the file ends inside a continued instruction"
    return instructions


def copy_sources(instruction: Instruction) -> list[str]:
    """The build-context paths a COPY/ADD reads (not --from=stage ones)."""
    words = [w for w in instruction.arguments.split() if not w.startswith("--")]
    if any(w.startswith("--from") for w in instruction.arguments.split()):
        return []
    return words[:-1]


class DockerIgnore:
    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self.rules.append((negated, re.compile(_translate(pattern))))

    def excluded(self, relative: str) -> bool:
        parts = relative.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for negated, regex in self.rules:
            if any(regex.fullmatch(c) for c in candidates):
                verdict = not negated
        return verdict


def _translate(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
