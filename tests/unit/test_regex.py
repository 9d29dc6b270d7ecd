"""ngx.re.*: the PCRE -> regex translation, the template parser, handles
and caches (regex.py), and the Lua API on every runtime (re.lua).  The
OpenResty comparison of 140 cases is tests/e2e/test_e2e_re.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fcgi_lua.lua import RUNTIMES, LuaEngine
from fcgi_lua.lua.regex import (
    PatternError,
    Regexes,
    compile_pattern,
    parse_template,
    translate,
)
from tests.helpers.lua import run_script


@pytest.mark.parametrize(
    ("pcre", "translated", "ncaptures"),
    [
        ("a(b)c", "a(b)c", 1),
        ("(?<n>a)(?'m'b)(?P<o>c)", "(a)(b)(c)", 3),
        ("(?<n>a)\\k<n>(?P=n)\\g{n}", "(a)(?:\\1)(?:\\1)(?:\\1)", 1),
        ("(a)(b)\\g{-1}\\g2", "(a)(b)(?:\\2)(?:\\2)", 2),
        ("\\k<later>(?<later>x)", "(?:\\1)(x)", 1),
        ("a\\zb\\Z", "a\\Zb(?=\\n?\\Z)", 0),
        ("\\Qa.b(\\E", "a\\.b\\(", 0),
        ("\\x{41}\\e\\cA", "\\x41\\x1b\\x01", 0),
        ("a{,2}b{2}c{1,}", "a\\{,2}b{2}c{1,}", 0),
        ("a(?i)b|c", "a(?i:b)|(?i:c)", 0),
        ("(a(?i)b)c", "(a(?i:b))c", 1),
        ("(?|(a)|(b)(c))(d)", "(?|(a)|(b)(c))(d)", 3),
        ("(?(<n>)a|b)(?<n>x)", "(?(1)a|b)(x)", 1),
        ("(a)(?-1)(?&n)(?<n>b)", "(a)(?1)(?2)(b)", 2),
        ("[]a[\\h]", "[\\]a\\[\\t \\xa0]", 0),
        ("[[:alpha:]]", "[[:alpha:]]", 0),
        ("a(?#comment)b", "ab", 0),
        ("(*FAIL)|x", "(*FAIL)|x", 0),
    ],
)
def test_translate(pcre: str, translated: str, ncaptures: int) -> None:
    t = translate(pcre)
    assert t.pattern == translated
    assert t.ncaptures == ncaptures


def test_translate_extended_comments_hide_syntax() -> None:
    assert translate("a # (not a group\n b", extended=True).pattern == "a  b"


@pytest.mark.parametrize(
    ("pattern", "opts", "message"),
    [
        (b"(a", b"", "missing )"),
        (b"a)", b"", "unmatched parentheses"),
        (b"[a", b"", "missing terminating ] for character class"),
        (b"(?<n>a)(?<n>b)", b"", "two named subpatterns have the same name"),
        (b"\\x{100}", b"", "character value in \\x{} or \\o{} is too large"),
        (b"\xff", b"u", "invalid UTF-8 string"),
    ],
)
def test_compile_errors(pattern: bytes, opts: bytes, message: str) -> None:
    with pytest.raises(PatternError, match=re.escape(message)):
        compile_pattern(pattern, opts)


def test_duplicate_names_with_d_keep_their_numbers() -> None:
    c = compile_pattern(b"(?<n>a)|(?<n>b)", b"D")
    assert c.ncaptures == 2
    assert c.names == [("n", 1), ("n", 2)]


@pytest.mark.parametrize(
    ("template", "parts"),
    [
        (b"[$0][$1]", [b"[", 0, b"][", 1, b"]"]),
        (b"${1}00$$", [1, b"00$"]),
        (b"$10x", [10, b"x"]),
        (b"plain", [b"plain"]),
        (b"$", None),
        (b"${1", None),
        (b"$name", None),
        (b"${}", None),
        (b"$ x", None),
    ],
)
def test_parse_template(template: bytes, parts: list[bytes | int] | None) -> None:
    assert parse_template(template) == parts


def test_exec_offsets_are_bytes_in_utf8_mode() -> None:
    regexes = Regexes()
    handle, ncaps, names = regexes.compile(b"(?<w>w.rld)", b"u")
    assert (ncaps, names) == (1, b"w:1")
    subject = "héllo wörld".encode()
    assert regexes.exec(handle, subject, 0) == (7, 13, 7, 13)
    assert regexes.exec(handle, subject, 2) == (False, b"pcre_exec() failed: -11")
    assert regexes.exec(handle, b"\xff", 0) == (False, b"pcre_exec() failed: -10")
    assert regexes.exec(handle, subject, 99) == (False, b"pcre_exec() failed: -24")
    assert regexes.exec(handle, b"nothing", 0) is None


def test_compile_is_cached_and_cleared() -> None:
    regexes = Regexes()
    first = regexes.compile(b"a+", b"")
    assert regexes.compile(b"a+", b"") == first
    assert regexes.compile(b"a+", b"i")[0] != first[0]
    regexes.clear()
    assert regexes.compile(b"a+", b"")[0] != first[0]


def test_sub_loop() -> None:
    regexes = Regexes()
    handle = regexes.compile(b"b*", b"")[0]
    assert regexes.sub(handle, b"abc", b"-", True) == (b"-a--c-", 4)
    assert regexes.sub(handle, b"abc", b"-", False) == (b"-abc", 1)
    assert regexes.sub(handle, b"abc", b"$x", False)[2] == (
        b"failed to compile the replacement template"
    )


SCRIPT = r"""
local m = ngx.re.match("hello, 1234", "([0-9])(?<rest>[0-9]+)", "jo")
ngx.say(m[0], " ", m[1], " ", m.rest)
ngx.say(ngx.re.find("hello, 1234", "[0-9]+"))
ngx.say(ngx.re.gsub("hello, world", "([a-z])[a-z]+", "[$0,$1]", "i"))
ngx.say(ngx.re.gsub("a1b2", "\\d", function(m) return "<" .. m[0] .. ">" end))
local out = {}
for m in ngx.re.gmatch("a1b2c3", "[a-z](\\d)") do out[#out + 1] = m[1] end
ngx.say(table.concat(out, ","))
ngx.say(table.concat(require("ngx.re").split("a,b,,c", ","), "|"))
ngx.say(pcall(function() local m = ngx.re.match("a", "a", "Z"); return m end))
"""


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_api_on_every_runtime(tmp_path: Path, runtime: str) -> None:
    try:
        engine = LuaEngine(runtime=runtime)
    except ValueError:
        pytest.skip(f"{runtime} not available")
    res = run_script(tmp_path, SCRIPT, engine=engine)
    lines = res.body.decode().splitlines()
    assert lines[:4] == ["1234 1 234", "811", "[hello,h], [world,w]2", "a<1>b<2>2"]
    assert lines[4:6] == ["1,2,3", "a|b||c"]
    assert lines[6].startswith("false") and lines[6].endswith('unknown flag "Z" (flags "Z")')
    assert "t.lua:" in lines[6]  # the caller's position


def test_cache_starts_over_when_full(tmp_path: Path) -> None:
    engine = LuaEngine()
    script = """
    for i = 1, 1100 do
        assert(ngx.re.match("x" .. i, "x" .. i .. "$")[0] == "x" .. i)
    end
    assert(ngx.re.match("abc", "b")[0] == "b")
    ngx.say("ok")
    """
    assert run_script(tmp_path, script, engine=engine).body == b"ok\n"
    assert len(engine.regexes._compiled) <= 1024


def test_lua_package_path_with_default(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mymod.lua").write_text('return { greeting = "hi" }')
    engine = LuaEngine(lua_package_path=f"{lib}/?.lua;;", lua_package_cpath="/x/?.so")
    script = 'ngx.say(require("mymod").greeting)\nngx.say(package.path)\nngx.say(package.cpath)'
    lines = run_script(tmp_path, script, engine=engine).body.decode().splitlines()
    assert lines[0] == "hi"
    assert lines[1].startswith(f"{lib}/?.lua;") and "/usr/share/lua/5." in lines[1]
    assert lines[2] == "/x/?.so"


# lua-nginx-module t/048-match-dfa.t, 050-gmatch-dfa.t, 052-sub-dfa.t,
# 054-gsub-dfa.t: the "d" option runs PCRE's DFA matcher, which reports the
# longest match at the leftmost position and no submatch captures.
DFA_SCRIPT = r"""
local m = ngx.re.match("hello", "(he|hell)", "d")
ngx.say(m[0], " ", tostring(m[1]))
m = ngx.re.match("hello", "he|hell", "do")
ngx.say(m[0])
local out = {}
for m in ngx.re.gmatch("hello, halo", "h[a-z]|h[a-z][a-z]", "d") do out[#out + 1] = m[0] end
ngx.say(table.concat(out, ","))
ngx.say(ngx.re.sub("hello, 1234 5678", "[0-9]|[0-9][0-9]", "world", "d"))
ngx.say(ngx.re.gsub("hello, 1234 5678", "[0-9]|[0-9][0-9]", "world", "d"))
ngx.say(ngx.re.find("hello", "he|hell", "d"))
m = ngx.re.match("hello", "(he|hell)", "")
ngx.say(m[0], " ", m[1])
"""


def test_dfa_option_is_leftmost_longest_without_captures(tmp_path: Path) -> None:
    lines = run_script(tmp_path, DFA_SCRIPT).body.decode().splitlines()
    assert lines == [
        "hell nil",
        "hell",
        "hel,hal",
        "hello, world34 56781",
        "hello, worldworld worldworld4",
        "14",
        "he he",  # without "d": PCRE's first alternative
    ]
    regexes = Regexes()
    assert regexes.compile(b"(?<x>a)(b)", b"d")[1:] == (0, b"")
