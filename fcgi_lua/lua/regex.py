"""ngx.re.*: PCRE patterns run on the ``regex`` package (re.lua is the Lua side).

This module owns the compiled patterns of one VM and the translation of
PCRE syntax into ``regex`` syntax; it never touches a request.  Lua holds
integer handles to compiled patterns (never the Python objects) and calls
Python once per match (``exec``), or once per ``sub``/``gsub`` with a
string template.  Offsets cross as 0-based byte offsets, ``-1`` for an
unmatched group, so that Lua builds the captures with ``string.sub``.

What lua-nginx-module 0.10.23 does is the reference (its Lua half is
lua-resty-core's ``resty/core/regex.lua``, over PCRE 8.x); the cases that
differ are listed in docs/lua-api.md ("ngx.re").
"""

from __future__ import annotations

import bisect
import logging
import re as std_re
from dataclasses import dataclass
from typing import Any

import regex

from fcgi_lua.lua.loader import load_chunk

log = logging.getLogger("fcgi_lua.lua")

# PCRE's match limit stands behind "pcre_exec() failed: -8"; a wall-clock
# limit is what the regex package offers.  A pattern that backtracks this
# long blocks the whole worker meanwhile.
MATCH_TIMEOUT = 1.0

# pcre_exec() error codes the Lua side reports as "pcre_exec() failed: N".
PCRE_ERROR_MATCHLIMIT = -8
PCRE_ERROR_BADUTF8 = -10
PCRE_ERROR_BADUTF8_OFFSET = -11
PCRE_ERROR_BADOFFSET = -24

# PCRE's wording for the compile errors scripts most often meet.
_PCRE_MESSAGES = {
    "missing )": "missing )",
    "missing ), unterminated subpattern": "missing )",
    "unbalanced parenthesis": "unmatched parentheses",
    "unterminated character set": "missing terminating ] for character class",
    "nothing to repeat": "nothing to repeat",
    "multiple repeat": "nothing to repeat",
    "bad escape (end of pattern)": "\\ at end of pattern",
    "min repeat greater than max repeat": "numbers out of order in {} quantifier",
}

_QUANTIFIER = std_re.compile(r"\{\d+(?:,\d*)?\}")
_GROUP_NAME = std_re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONDITION = std_re.compile(r"(?:<([^>]+)>|'([^']+)'|([+-]?\d+|R&\w+|R\d*|\w+))\)")
_HSPACE = "\\t \\xa0"
_VSPACE = "\\n\\x0b\\f\\r\\x85"


class PatternError(Exception):
    """The pattern cannot be compiled; the message is PCRE's when known.

    ``offset`` is where PCRE would stop in the source pattern (characters),
    when known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass
class _Group:
    branch_reset: bool = False
    reset_start: int = 0  # the group count when a (?| group opened
    reset_max: int = 0
    scoped: str = ""  # inline flags "(?i)" turned into "(?i:" inside this group
    extended: bool = False  # (?x) seen: comments and blanks are ignored


@dataclass
class Translation:
    pattern: str
    ncaptures: int
    names: list[tuple[str, int]]
    unresolved: bool  # a name referred to before its group (second pass needed)


class _Translator:
    """PCRE syntax -> regex syntax, numbering groups as PCRE does.

    Named groups become plain groups (the name table is kept here: PCRE
    numbers duplicate names (D) separately, regex would merge them), and
    every reference by name becomes one by number.
    """

    def __init__(
        self, source: str, extended: bool, known: dict[str, int], unicode: bool, dupnames: bool
    ) -> None:
        self.src = source
        self.dupnames = dupnames
        self.i = 0
        self.out: list[str] = []
        self.count = 0
        self.names: list[tuple[str, int]] = []
        self.known = known
        self.unresolved = False
        self.unicode = unicode
        self.stack = [_Group(extended=extended)]

    # -- helpers ------------------------------------------------------------

    def fail(self, message: str, offset: int | None = None) -> PatternError:
        return PatternError(message, offset)

    def number_of(self, name: str) -> int:
        for known_name, number in self.names:
            if known_name == name:
                return number
        later = self.known.get(name)
        if later is None:
            self.unresolved = True
            return 1
        return later

    def read_until(self, end: str) -> str:
        j = self.src.find(end, self.i)
        if j < 0:
            raise self.fail("missing terminator for subpattern name")
        text = self.src[self.i : j]
        self.i = j + len(end)
        return text

    def literal(self, code: int) -> str:
        if not self.unicode and code > 0xFF:
            raise self.fail("character value in \\x{} or \\o{} is too large")
        if code <= 0xFF:
            return f"\\x{code:02x}"
        return f"\\U{code:08x}"

    # -- the walk -----------------------------------------------------------

    def run(self) -> Translation:
        src = self.src
        while self.i < len(src):
            c = src[self.i]
            self.i += 1
            if c == "\\":
                self.out.append(self.escape(in_class=False))
            elif c == "[":
                self.char_class()
            elif c == "(":
                self.open_group()
            elif c == ")":
                self.close_group()
            elif c == "|":
                self.alternative()
            elif c == "{" and not _QUANTIFIER.match(src, self.i - 1):
                self.out.append("\\{")  # PCRE: not a quantifier, a literal
            elif c == "#" and self.stack[-1].extended:
                j = src.find("\n", self.i)
                self.i = len(src) if j < 0 else j + 1
            else:
                self.out.append(c)
        if len(self.stack) > 1:
            raise self.fail("missing )", len(src))
        self.close_scoped(self.stack[0])
        return Translation("".join(self.out), self.count, self.names, self.unresolved)

    def escape(self, in_class: bool) -> str:
        src = self.src
        if self.i >= len(src):
            raise self.fail("\\ at end of pattern")
        c = src[self.i]
        self.i += 1
        if c == "Q":
            j = src.find("\\E", self.i)
            text = src[self.i :] if j < 0 else src[self.i : j]
            self.i = len(src) if j < 0 else j + 2
            return "".join(std_re.escape(ch) for ch in text)
        if c == "E":
            return ""
        if c == "x" and self.i < len(src) and src[self.i] == "{":
            body = self.read_braced()
            return self.literal(int(body or "0", 16))
        if c == "o" and self.i < len(src) and src[self.i] == "{":
            return self.literal(int(self.read_braced() or "0", 8))
        if c == "e":
            return "\\x1b"
        if c == "c":
            if self.i >= len(src):
                raise self.fail("\\c at end of pattern")
            ch = src[self.i]
            self.i += 1
            return self.literal(ord(ch.upper()) ^ 0x40)
        if c == "h":
            return _HSPACE if in_class else f"[{_HSPACE}]"
        if c == "v":
            return _VSPACE if in_class else f"[{_VSPACE}]"
        if c == "H" and not in_class:
            return f"[^{_HSPACE}]"
        if c == "V" and not in_class:
            return f"[^{_VSPACE}]"
        if in_class:
            return "\\" + c
        if c == "z":
            return "\\Z"
        if c == "Z":
            return "(?=\\n?\\Z)"
        if c == "R":
            return f"(?:\\r\\n|[{_VSPACE}])"
        if c == "N" and not src.startswith("{", self.i):
            return "[^\\n]"
        if c == "k":
            opener = src[self.i : self.i + 1]
            closer = {"<": ">", "'": "'", "{": "}"}.get(opener)
            if closer is None:
                raise self.fail("\\k is not followed by a braced, angle-bracketed, or quoted name")
            self.i += 1
            return f"(?:\\{self.number_of(self.read_until(closer))})"
        if c == "g":
            return self.g_reference()
        return "\\" + c

    def read_braced(self) -> str:
        self.i += 1  # the "{"
        return self.read_until("}")

    def g_reference(self) -> str:
        src = self.src
        if src.startswith("{", self.i):
            ref = self.read_braced()
        elif src.startswith("<", self.i) or src.startswith("'", self.i):
            # \g<n> / \g'name' are subroutine calls in PCRE
            closer = ">" if src[self.i] == "<" else "'"
            self.i += 1
            ref = self.read_until(closer)
            return f"(?{self.group_number(ref)})"
        else:
            m = std_re.compile(r"[+-]?\d+").match(src, self.i)
            if not m:
                raise self.fail("a numbered reference must not be zero")
            ref = m.group()
            self.i = m.end()
        return f"(?:\\{self.group_number(ref)})"

    def group_number(self, ref: str) -> int:
        if std_re.fullmatch(r"[+-]?\d+", ref):
            n = int(ref)
            if ref.startswith("-"):
                return self.count + n + 1
            if ref.startswith("+"):
                return self.count + n
            return n
        return self.number_of(ref)

    def char_class(self) -> None:
        src = self.src
        out = ["["]
        if src.startswith("^", self.i):
            out.append("^")
            self.i += 1
        first = True
        while True:
            if self.i >= len(src):
                raise self.fail("missing terminating ] for character class")
            c = src[self.i]
            self.i += 1
            if c == "]" and not first:
                break
            first = False
            if c == "\\":
                out.append(self.escape(in_class=True))
            elif c == "[":
                m = std_re.compile(r"\[:\^?[a-z]+:\]").match(src, self.i - 1)
                if m:
                    out.append(m.group())
                    self.i = m.end()
                else:
                    out.append("\\[")
            elif c in "]&~|":
                out.append("\\" + c)
            else:
                out.append(c)
        out.append("]")
        self.out.append("".join(out))

    def open_group(self) -> None:
        src = self.src
        self.out.append("(")
        if not src.startswith("?", self.i):
            if src.startswith("*", self.i):  # (*VERB)
                self.out.append(self.read_until(")") + ")")
                return
            self.count += 1
            self.stack.append(_Group(extended=self.stack[-1].extended))
            return
        self.i += 1
        rest = src[self.i : self.i + 2]
        if rest.startswith("#"):
            self.out.pop()
            self.read_until(")")
            return
        if rest.startswith("<") and rest[1:2] not in ("=", "!"):
            self.i += 1
            self.named_group(self.read_until(">"))
            return
        if rest.startswith("'"):
            self.i += 1
            self.named_group(self.read_until("'"))
            return
        if rest == "P<":
            self.i += 2
            self.named_group(self.read_until(">"))
            return
        if rest == "P=":
            self.i += 2
            self.out[-1] = f"(?:\\{self.number_of(self.read_until(')'))})"
            return
        if rest in ("P>",) or rest.startswith("&"):
            self.i += 2 if rest == "P>" else 1
            self.out[-1] = f"(?{self.number_of(self.read_until(')'))})"
            return
        m = std_re.compile(r"([+-]?\d+|R)\)").match(src, self.i)
        if m:  # recursion (?R) (?1) (?-1) (?+1)
            self.i = m.end()
            ref = m.group(1)
            self.out[-1] = "(?R)" if ref in ("R", "0") else f"(?{self.group_number(ref)})"
            return
        if rest.startswith("("):  # a condition
            self.i += 1
            self.stack.append(_Group(extended=self.stack[-1].extended))
            self.out[-1] = "(?("
            m = _CONDITION.match(src, self.i)
            if m:
                self.i = m.end()
                name = m.group(1) or m.group(2) or m.group(3)
                if name in ("DEFINE", "R") or (name.startswith(("R&", "R")) and name[1:].isdigit()):
                    self.out[-1] = f"(?({name})"
                elif std_re.fullmatch(r"[+-]?\d+", name):
                    self.out[-1] = f"(?({self.group_number(name)})"
                else:
                    self.out[-1] = f"(?({self.number_of(name)})"
            return
        m = std_re.compile(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])").match(src, self.i)
        if m and (m.group(1) or m.group(2) is not None):
            self.i = m.end()
            on, off = m.group(1), m.group(2)
            spec = on + ("-" + off if off else "")
            group = self.stack[-1]
            if m.group(3) == ")":  # (?i): up to the end of the enclosing group
                self.out[-1] = f"(?{spec}:"
                group.scoped += spec + "\0"
                if "x" in on:
                    group.extended = True
                if off and "x" in off:
                    group.extended = False
                return
            self.out[-1] = f"(?{spec}:"
            self.stack.append(_Group(extended=group.extended or "x" in on))
            return
        if rest.startswith("|"):
            self.i += 1
            self.out[-1] = "(?|"
            self.stack.append(
                _Group(
                    branch_reset=True,
                    reset_start=self.count,
                    reset_max=self.count,
                    extended=self.stack[-1].extended,
                )
            )
            return
        # (?: (?= (?! (?<= (?<! (?> and anything regex may know
        self.out[-1] = "(?"
        self.stack.append(_Group(extended=self.stack[-1].extended))

    def named_group(self, name: str) -> None:
        if not _GROUP_NAME.fullmatch(name):
            raise self.fail("syntax error in subpattern name (missing terminator)")
        if not self.dupnames and any(known == name for known, _ in self.names):
            raise self.fail("two named subpatterns have the same name", self.i - 1)
        self.count += 1
        self.names.append((name, self.count))
        self.stack.append(_Group(extended=self.stack[-1].extended))

    def close_scoped(self, group: _Group) -> None:
        self.out.append(")" * group.scoped.count("\0"))

    def reopen_scoped(self, group: _Group) -> None:
        for spec in group.scoped.split("\0")[:-1]:
            self.out.append(f"(?{spec}:")

    def close_group(self) -> None:
        if len(self.stack) == 1:
            raise self.fail("unmatched parentheses")
        group = self.stack.pop()
        self.close_scoped(group)
        self.out.append(")")
        if group.branch_reset:
            self.count = max(group.reset_max, self.count)

    def alternative(self) -> None:
        group = self.stack[-1]
        self.close_scoped(group)
        self.out.append("|")
        self.reopen_scoped(group)
        if group.branch_reset:
            group.reset_max = max(group.reset_max, self.count)
            self.count = group.reset_start


def translate(
    source: str, *, extended: bool = False, unicode: bool = False, dupnames: bool = False
) -> Translation:
    """Rewrite a PCRE pattern in the ``regex`` package's syntax."""
    first = _Translator(source, extended, {}, unicode, dupnames).run()
    if not first.unresolved:
        return first
    known: dict[str, int] = {}
    for name, number in first.names:
        known.setdefault(name, number)
    second = _Translator(source, extended, known, unicode, dupnames).run()
    if second.unresolved:
        raise PatternError("reference to non-existent subpattern")
    return second


@dataclass
class Compiled:
    compiled: Any
    unicode: bool
    utf8_check: bool
    anchored: bool
    ncaptures: int
    names: list[tuple[str, int]]


def _pcre_message(exc: regex.error) -> str:
    msg = str(exc.msg) if hasattr(exc, "msg") else str(exc)
    return _PCRE_MESSAGES.get(msg, msg)


def compile_pattern(pattern: bytes, opts: bytes) -> Compiled:
    """Compile ``pattern`` with ngx.re options (already checked by re.lua)."""
    flags = 0
    unicode = b"u" in opts or b"U" in opts
    if b"i" in opts:
        flags |= regex.IGNORECASE
    if b"m" in opts:
        flags |= regex.MULTILINE
    if b"s" in opts:
        flags |= regex.DOTALL
    if b"x" in opts:
        flags |= regex.VERBOSE
    # "d": PCRE's DFA matcher (pcre_dfa_exec), which returns the longest
    # match at the leftmost position where one starts -- regex's POSIX mode --
    # and no submatch captures (lua-nginx-module gives it one ovector pair).
    dfa = b"d" in opts
    if dfa:
        flags |= regex.POSIX
    if unicode:
        try:
            source = pattern.decode("utf-8")
        except UnicodeDecodeError:
            raise PatternError("invalid UTF-8 string") from None
        # PCRE without UCP: \d \w \s \b stay ASCII even in UTF-8 mode; only
        # caseless matching of non-ASCII letters needs regex's Unicode mode.
        if not (flags & regex.IGNORECASE and not source.isascii()):
            flags |= regex.ASCII
    else:
        source = pattern.decode("latin-1")
    t = translate(source, extended=b"x" in opts, unicode=unicode, dupnames=b"D" in opts)
    target: str | bytes = t.pattern if unicode else t.pattern.encode("latin-1")
    try:
        compiled = regex.compile(target, flags)
    except regex.error as exc:
        # the position is only meaningful when nothing was rewritten
        offset = exc.pos if t.pattern == source else None
        raise PatternError(_pcre_message(exc), offset) from exc
    except (ValueError, OverflowError, RecursionError) as exc:
        raise PatternError(str(exc)) from exc
    names = sorted(t.names)  # PCRE's name table: by name, then by number
    ncaptures = t.ncaptures
    if dfa:
        ncaptures, names = 0, []
    return Compiled(compiled, unicode, b"U" not in opts, b"a" in opts, ncaptures, names)


class _Utf8Subject:
    """A UTF-8 subject decoded once, with byte <-> character offsets."""

    __slots__ = ("data", "offsets", "text")

    def __init__(self, data: bytes, check: bool) -> None:
        self.data = data
        self.text = data.decode("utf-8", "strict" if check else "surrogateescape")
        # byte offset of each character, and of the end (None: all ASCII)
        self.offsets: list[int] | None = None
        if not data.isascii():
            offsets = [0] * (len(self.text) + 1)
            at = 0
            for index, ch in enumerate(self.text):
                offsets[index] = at
                code = ord(ch)
                at += 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
                if 0xDC80 <= code <= 0xDCFF:  # a surrogate-escaped byte
                    at -= 2
            offsets[-1] = at
            self.offsets = offsets

    def char_index(self, byte_pos: int) -> int | None:
        offsets = self.offsets
        if offsets is None:
            return byte_pos
        index = bisect.bisect_left(offsets, byte_pos)
        if index < len(offsets) and offsets[index] == byte_pos:
            return index
        return None

    def byte_index(self, char_pos: int) -> int:
        return char_pos if self.offsets is None else self.offsets[char_pos]


class Regexes:
    """The compiled patterns of one VM, behind integer handles."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[bytes, bytes], int] = {}
        self._compiled: dict[int, Compiled] = {}
        self._templates: dict[tuple[int, bytes], list[bytes | int] | None] = {}
        self._next = 1
        self._last: _Utf8Subject | None = None

    # -- compiling -------------------------------------------------------------

    def compile(self, pattern: bytes, opts: bytes) -> Any:
        """-> id, ncaptures, names ("name:1,other:2") | None, err

        re.lua keeps the same cache by the same key and calls ``clear``
        when it is full, so handles it holds are always valid here."""
        key = (pattern, opts)
        handle = self._by_key.get(key)
        if handle is None:
            try:
                compiled = compile_pattern(pattern, opts)
            except PatternError as exc:
                return None, _compile_error(exc, pattern, b"u" in opts or b"U" in opts)
            handle = self._next
            self._next += 1
            self._by_key[key] = handle
            self._compiled[handle] = compiled
        compiled = self._compiled[handle]
        names = ",".join(f"{name}:{number}" for name, number in compiled.names)
        return handle, compiled.ncaptures, names.encode("utf-8")

    def clear(self) -> None:
        self._by_key.clear()
        self._compiled.clear()
        self._templates.clear()

    # -- matching ----------------------------------------------------------------

    def _subject(self, data: bytes, check: bool) -> _Utf8Subject:
        last = self._last
        if last is not None and (last.data is data or last.data == data):
            return last
        subject = _Utf8Subject(data, check)
        self._last = subject
        return subject

    def _search(self, c: Compiled, subject: Any, pos: int) -> Any:
        method = c.compiled.match if c.anchored else c.compiled.search
        return method(subject, pos, timeout=MATCH_TIMEOUT)

    def exec(self, handle: int, data: bytes, pos: int) -> Any:
        """One match from byte ``pos``: the 0-based (start, end) byte offsets
        of every group (-1, -1 when unmatched) | None | (False, err)."""
        c = self._compiled[handle]
        if pos > len(data):
            return False, b"pcre_exec() failed: %d" % PCRE_ERROR_BADOFFSET
        try:
            if not c.unicode:
                m = self._search(c, data, pos)
                return None if m is None else _flat_spans(m, c.ncaptures)
            try:
                subject = self._subject(data, c.utf8_check)
            except UnicodeDecodeError:
                return False, b"pcre_exec() failed: %d" % PCRE_ERROR_BADUTF8
            start = subject.char_index(pos)
            if start is None:
                return False, b"pcre_exec() failed: %d" % PCRE_ERROR_BADUTF8_OFFSET
            m = self._search(c, subject.text, start)
        except TimeoutError:
            return False, b"pcre_exec() failed: %d" % PCRE_ERROR_MATCHLIMIT
        if m is None:
            return None
        if subject.offsets is None:
            return _flat_spans(m, c.ncaptures)
        byte_index = subject.byte_index
        spans: list[int] = []
        for s, e in m.regs[: c.ncaptures + 1]:
            spans += (-1, -1) if s < 0 else (byte_index(s), byte_index(e))
        return tuple(spans)

    # -- sub / gsub with a string template ------------------------------------------

    def template(self, handle: int, template: bytes) -> list[bytes | int] | None:
        key = (handle, template)
        try:
            return self._templates[key]
        except KeyError:
            pass
        parts = parse_template(template)
        if len(self._templates) >= 1024:  # templates built at run time
            self._templates.clear()
        self._templates[key] = parts
        return parts

    def sub(self, handle: int, data: bytes, template: bytes, global_: bool) -> Any:
        """-> new string, count | None, None, err (resty.core's loop)."""
        c = self._compiled[handle]
        parts = self.template(handle, template)
        if parts is None:
            return None, None, b"failed to compile the replacement template"
        pieces: list[bytes] = []
        count = 0
        pos = 0
        copied = 0
        length = len(data)
        while True:
            spans = self.exec(handle, data, pos)
            if spans is None:
                break
            if spans[0] is False:
                return None, None, spans[1]
            count += 1
            start, end = spans[0], spans[1]
            pieces.append(data[copied:start])
            for part in parts:
                if isinstance(part, int):
                    if part <= c.ncaptures and spans[2 * part] >= 0:
                        pieces.append(data[spans[2 * part] : spans[2 * part + 1]])
                else:
                    pieces.append(part)
            copied = pos = end
            if end == start:
                pos += 1
                if pos > length:
                    break
            if not global_:
                break
        if count == 0:
            return data, 0
        pieces.append(data[copied:])
        return b"".join(pieces), count

    def functions(self) -> dict[bytes, Any]:
        """What re.lua gets to call."""
        return {
            b"compile": self.compile,
            b"exec": self.exec,
            b"sub": self.sub,
            b"clear": self.clear,
        }


def _flat_spans(m: Any, ncaptures: int) -> tuple[int, ...]:
    spans: list[int] = []
    for s, e in m.regs[: ncaptures + 1]:
        spans += (s, e)
    return tuple(spans)


def _compile_error(exc: PatternError, pattern: bytes, unicode: bool) -> bytes:
    # nginx's ngx_regex_compile wording, with the rest of the pattern from
    # where PCRE stopped unless that is its end.
    text = b'pcre_compile() failed: %s in "%s"' % (str(exc).encode("utf-8"), pattern)
    offset = exc.offset
    if offset is not None and unicode:
        offset = len(pattern.decode("utf-8")[:offset].encode("utf-8"))
    if offset is not None and offset < len(pattern):
        text += b' at "%s"' % pattern[offset:]
    return text


def parse_template(template: bytes) -> list[bytes | int] | None:
    """An ngx.re.sub template ("$0", "${1}", "$$") as literal parts and group
    numbers; None when invalid (lua-nginx-module's ngx_http_lua_script.c
    rules: named captures are not supported there)."""
    parts: list[bytes | int] = []
    literal = bytearray()
    i = 0
    n = len(template)
    while i < n:
        c = template[i]
        if c != 0x24:  # "$"
            literal.append(c)
            i += 1
            continue
        i += 1
        if i == n:
            return None
        if template[i] == 0x24:
            literal.append(0x24)
            i += 1
            continue
        bracket = template[i] == 0x7B  # "{"
        if bracket:
            i += 1
            if i == n:
                return None
        j = i
        while j < n and 0x30 <= template[j] <= 0x39:
            j += 1
        if j == i:  # not a number: a name (unsupported) or nothing
            k = i
            while k < n and (chr(template[k]).isalnum() or template[k] == 0x5F):
                k += 1
            if bracket and (k == n or template[k] != 0x7D):
                log.error(
                    'the closing bracket in "%s" variable is missing',
                    template[i:k].decode("latin-1"),
                )
            elif k > i:
                log.error(
                    'attempt to use named capturing variable "%s" (named captures not '
                    "supported yet)",
                    template[i:k].decode("latin-1"),
                )
            return None
        number = int(template[i:j])
        if bracket:
            if j == n or template[j] != 0x7D:
                log.error(
                    'the closing bracket in "%s" variable is missing',
                    template[i:j].decode("latin-1"),
                )
                return None
            j += 1
        if literal:
            parts.append(bytes(literal))
            literal.clear()
        parts.append(number)
        i = j
    if literal:
        parts.append(bytes(literal))
    return parts


def install(lua: Any, extensions: Any) -> Regexes:
    """Load re.lua into ``lua`` (after ngx.lua): ngx.re and ``require "ngx.re"``."""
    regexes = Regexes()
    chunk = load_chunk(lua, "re.lua")
    chunk(lua.table_from(regexes.functions()), extensions)
    return regexes
