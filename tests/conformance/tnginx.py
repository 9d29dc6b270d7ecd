"""Reading lua-nginx-module's ``t/*.t`` files (Test::Nginx / Test::Base).

A ``.t`` file is a Perl prologue, ``__DATA__``, then blocks::

    === TEST 1: title
    --- config
        location = /t { content_by_lua_block { ngx.say("ok") } }
    --- request
    GET /t
    --- response_body
    ok

Test::Base's rules, as Test::Nginx uses them: a section runs from its
``--- name [filters]`` line to the next section or block; ``--- name: value``
is a one-line value; every section gets the default ``trim`` filter (no
leading blank lines, exactly one trailing newline); ``chomp`` drops that
newline; ``eval`` makes the section a Perl expression.  Perl expressions
(``eval`` sections) are evaluated by the system ``perl`` (one process per
file, with the file's prologue loaded and Test::Nginx's functions stubbed),
so ``"a" x 1024`` and ``[qr/.../]`` mean what they mean to Test::Nginx.

Text is handled as Latin-1 ``str`` throughout, so bytes survive unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERL = shutil.which("perl")

_BLOCK = re.compile(r"^===[ \t]+(.*)$", re.M)
_SECTION = re.compile(r"^---[ \t]+(\w+)(?:[ \t]*:[ \t]*(.*?)|((?:[ \t]+[\w\-]+)*))[ \t]*$")


@dataclass
class Value:
    """A section's value after its filters: a string, a list of values
    (Perl array), or a regex (Perl ``qr//``)."""

    text: str | None = None
    items: list[Value] | None = None
    regex: str | None = None


@dataclass
class Block:
    file: str
    number: int  # 1-based position in the file
    title: str
    sections: dict[str, Value] = field(default_factory=dict)
    filters: dict[str, list[str]] = field(default_factory=dict)
    problem: str = ""  # why it cannot be read (a failed eval...)

    @property
    def name(self) -> str:
        return f"{self.file}: {self.title}"

    def has(self, section: str) -> bool:
        return section in self.sections

    def text(self, section: str) -> str | None:
        value = self.sections.get(section)
        return None if value is None else value.text


@dataclass
class TestFile:
    path: Path
    prologue: str
    blocks: list[Block]
    request_default: str | None = None  # set by an add_block_preprocessor
    preprocessor_problem: str = ""


def _trim(text: str) -> str:
    # Test::Base's trim: drop leading blank lines; end with one newline.
    text = re.sub(r"\A([ \t]*\n)+", "", text)
    return re.sub(r"(?<=\n)\s*\Z", "", text)


def parse_file(path: Path) -> TestFile:
    source = path.read_text("latin-1")
    prologue, _, data = source.partition("\n__DATA__\n")
    data = data.split("\n__END__\n", 1)[0]
    starts = list(_BLOCK.finditer(data))
    blocks: list[Block] = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(data)
        body = data[match.end() + 1 : end]
        block = Block(path.name, index + 1, match.group(1).strip())
        _parse_sections(block, body)
        blocks.append(block)
    test_file = TestFile(path, prologue, blocks)
    _apply_preprocessor(test_file)
    if any("eval" in b.filters.get(s, []) for b in blocks for s in b.sections):
        _evaluate(test_file)
    only = [b for b in blocks if b.has("ONLY")]
    if only:
        test_file.blocks = only
    return test_file


def _parse_sections(block: Block, body: str) -> None:
    name = ""
    inline = False
    lines: list[str] = []

    def close() -> None:
        if not name or inline:
            return
        text = _trim("".join(lines))
        for flt in block.filters.get(name, []):
            if flt == "chomp":
                text = text[:-1] if text.endswith("\n") else text
            elif flt == "chop":
                text = text[:-1]
        block.sections[name] = Value(text=text)

    for line in body.splitlines(keepends=True):
        match = _SECTION.match(line.rstrip("\n"))
        if match:
            close()
            name, value, filters = match.group(1), match.group(2), match.group(3)
            lines = []
            block.filters[name] = (filters or "").split()
            inline = value is not None
            if inline:
                block.sections[name] = Value(text=value)
            continue
        if name:
            lines.append(line)
    close()


def _apply_preprocessor(test_file: TestFile) -> None:
    prologue = test_file.prologue
    if "add_block_preprocessor" not in prologue:
        return
    body = prologue.split("add_block_preprocessor", 1)[1]
    if re.search(r'set_value\("request",\s*"([^"]+)"\)', body):
        test_file.request_default = re.search(  # type: ignore[union-attr]
            r'set_value\("request",\s*"([^"]+)"\)', body
        ).group(1)
    if re.search(r'set_value\("(http_config|user_files|config|main_config)"', body):
        test_file.preprocessor_problem = "the file's add_block_preprocessor rewrites its config"
    for block in test_file.blocks:
        if test_file.request_default and not block.has("request"):
            block.sections["request"] = Value(text=test_file.request_default + "\n")


# Test::Nginx's exported functions, stubbed so the prologue runs without it.
_PERL_HELPER = r"""
use strict; no strict 'vars'; no warnings;
use JSON::PP;
package main;
our $ServerPort = 1984; our $ServerPortForClient = 1984; our $HtmlDir = '/tmp/html';
our $AUTOLOAD;
sub AUTOLOAD { return 1 }
sub DESTROY {}
sub blocks { return 1 }
sub repeat_each { return 1 }
sub env_to_nginx {}
sub add_block_preprocessor {}
sub run_tests {}
my $input = do { local $/; <STDIN> };
my $todo = JSON::PP->new->latin1->decode($input);
{
    local $@;
    eval $todo->{prologue};
}
sub conv {
    my ($v) = @_;
    return { regex => "$v" } if ref $v eq 'Regexp';
    return { items => [map { conv($_) } @$v] } if ref $v eq 'ARRAY';
    return { text => (defined $v ? "$v" : undef) };
}
my @out;
for my $expr (@{$todo->{exprs}}) {
    local $@;
    my $v = eval $expr;
    if ($@) { push @out, { error => "$@" }; } else { push @out, conv($v); }
}
print JSON::PP->new->latin1->encode(\@out);
"""


def _evaluate(test_file: TestFile) -> None:
    todo: list[tuple[Block, str]] = []
    for block in test_file.blocks:
        for name in block.sections:
            if "eval" in block.filters.get(name, []):
                todo.append((block, name))
    if PERL is None:
        for block, name in todo:
            block.problem = f"--- {name} eval needs perl"
        return
    prologue = "\n".join(
        line
        for line in test_file.prologue.splitlines()
        if not re.match(r"\s*(use\s+(Test::|t::|lib\b)|plan\b|run_tests\b)", line)
    )
    exprs = [block.sections[name].text or "" for block, name in todo]
    proc = subprocess.run(
        [PERL, "-e", _PERL_HELPER],
        input=json.dumps({"prologue": prologue, "exprs": exprs}).encode("latin-1"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    try:
        results = json.loads(proc.stdout.decode("latin-1"))
    except ValueError:
        for block, _ in todo:
            block.problem = "perl failed on the file's eval sections"
        return
    for (block, name), result in zip(todo, results, strict=True):
        if "error" in result:
            first = result["error"].strip().splitlines()[0]
            block.problem = f"--- {name} eval: perl could not evaluate it ({first[:60]})"
            continue
        value = _to_value(result)
        # chomp etc. after eval (Test::Base applies filters in order)
        filters = block.filters.get(name, [])
        if value.text is not None and "chomp" in filters[filters.index("eval") :]:
            value.text = value.text.rstrip("\n") if value.text.endswith("\n") else value.text
        block.sections[name] = value


def _to_value(data: dict[str, Any]) -> Value:
    if "regex" in data:
        return Value(regex=str(data["regex"]))
    if "items" in data:
        return Value(items=[_to_value(item) for item in data["items"]])
    text = data.get("text")
    return Value(text=None if text is None else str(text))


_PERL_FLAGS = re.compile(r"\(\?\^([a-z]*):")


def perl_regex(pattern: str, *, dotall: bool = False) -> re.Pattern[str]:
    """A Perl regex (possibly a stringified ``qr//``) as a Python one."""
    pattern = _PERL_FLAGS.sub(lambda m: f"(?{m.group(1)}:" if m.group(1) else "(?:", pattern)
    pattern = pattern.replace(r"\z", r"\Z").replace(r"\A", r"\A")
    pattern = re.sub(r"\\Q(.*?)(\\E|$)", lambda m: re.escape(m.group(1)), pattern)
    return re.compile(pattern, re.S if dotall else 0)
