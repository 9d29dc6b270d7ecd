"""Just enough of nginx's config syntax to take a test's ``--- config``
apart: directives, quoted strings with nginx's escapes, ``{}`` blocks, and
the ``*_by_lua_block { ... }`` directives whose body is Lua (read with Lua's
own string and comment rules, as lua-nginx-module's parser does)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class ConfigError(ValueError):
    pass


@dataclass
class Directive:
    name: str
    args: list[str] = field(default_factory=list)
    block: list[Directive] | None = None
    lua: str | None = None  # the body of a *_by_lua_block directive

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]


_NGINX_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_LONG_BRACKET = re.compile(r"\[(=*)\[")


def parse(text: str) -> list[Directive]:
    directives, _ = _parse_block(text, 0, top=True)
    return directives


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text):
        ch = text[pos]
        if ch in " \t\r\n":
            pos += 1
        elif ch == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end + 1
        else:
            break
    return pos


def _word(text: str, pos: int) -> tuple[str, int]:
    ch = text[pos]
    if ch in "\"'":
        out = []
        pos += 1
        while pos < len(text):
            c = text[pos]
            if c == "\\" and pos + 1 < len(text):
                nxt = text[pos + 1]
                if nxt in _NGINX_ESCAPES:
                    out.append(_NGINX_ESCAPES[nxt])
                else:
                    out.append(c + nxt)
                pos += 2
                continue
            if c == ch:
                return "".join(out), pos + 1
            out.append(c)
            pos += 1
        raise ConfigError("unterminated string")
    start = pos
    while pos < len(text) and text[pos] not in " \t\r\n;{}":
        if text[pos] == "\\":
            pos += 1
        pos += 1
    return text[start:pos], pos


def _lua_block(text: str, pos: int) -> tuple[str, int]:
    """``pos`` is just after ``{``: the Lua up to the matching ``}``."""
    start, depth = pos, 1
    while pos < len(text):
        ch = text[pos]
        if ch in "\"'":
            pos += 1
            while pos < len(text) and text[pos] != ch:
                pos += 2 if text[pos] == "\\" else 1
            pos += 1
        elif text.startswith("--", pos):
            long = _LONG_BRACKET.match(text, pos + 2)
            if long:
                end = text.find("]" + long.group(1) + "]", long.end())
                pos = len(text) if end < 0 else end + len(long.group(1)) + 2
            else:
                end = text.find("\n", pos)
                pos = len(text) if end < 0 else end + 1
        elif ch == "[" and _LONG_BRACKET.match(text, pos):
            long = _LONG_BRACKET.match(text, pos)
            assert long is not None
            end = text.find("]" + long.group(1) + "]", long.end())
            pos = len(text) if end < 0 else end + len(long.group(1)) + 2
        elif ch == "{":
            depth += 1
            pos += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:pos], pos + 1
            pos += 1
        else:
            pos += 1
    raise ConfigError("unterminated Lua block")


def _parse_block(text: str, pos: int, *, top: bool) -> tuple[list[Directive], int]:
    out: list[Directive] = []
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text):
            if not top:
                raise ConfigError("unexpected end of config")
            return out, pos
        if text[pos] == "}":
            if top:
                raise ConfigError("unexpected }")
            return out, pos + 1
        name, pos = _word(text, pos)
        directive = Directive(name)
        while True:
            pos = _skip_space(text, pos)
            if pos >= len(text):
                raise ConfigError(f"unterminated directive {name}")
            ch = text[pos]
            if ch == ";":
                pos += 1
                break
            if ch == "{":
                if name.endswith("_by_lua_block"):
                    directive.lua, pos = _lua_block(text, pos + 1)
                else:
                    directive.block, pos = _parse_block(text, pos + 1, top=False)
                break
            if ch == "}":
                raise ConfigError(f"unexpected }} in {name}")
            arg, pos = _word(text, pos)
            directive.args.append(arg)
        out.append(directive)


def location_matches(args: list[str], uri: str) -> bool:
    """Whether a ``location`` with these arguments takes ``uri``."""
    if len(args) == 1:
        return uri.startswith(args[0]) if not args[0].startswith("@") else False
    modifier, pattern = args[0], args[1]
    if modifier == "=":
        return uri == pattern
    if modifier == "^~":
        return uri.startswith(pattern)
    if modifier in ("~", "~*"):
        try:
            return re.search(pattern, uri, re.I if modifier == "~*" else 0) is not None
        except re.error:
            return False
    return False


def quote(value: str) -> str:
    """An nginx config word for ``value``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
