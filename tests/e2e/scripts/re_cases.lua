-- ngx.re.* cases, one line each: the same output is expected from
-- fcgi-lua and from OpenResty (tests/e2e/test_e2e_re.py).

local function show(v)
    local t = type(v)
    if t == "string" then
        return string.format("%q", v)
    end
    if t ~= "table" then
        return tostring(v)
    end
    local out = {}
    local n = 0
    while v[n] ~= nil do
        out[#out + 1] = n .. "=" .. show(v[n])
        n = n + 1
    end
    local names = {}
    for k in pairs(v) do
        if type(k) ~= "number" or k >= n or k < 0 then
            names[#names + 1] = tostring(k)
        end
    end
    table.sort(names)
    for _, k in ipairs(names) do
        local val = v[k]
        if val == nil then val = v[tonumber(k)] end
        out[#out + 1] = k .. "=" .. show(val)
    end
    return "{" .. table.concat(out, ",") .. "}"
end

local function results(...)
    local out = {}
    for i = 1, select("#", ...) do
        out[i] = show((select(i, ...)))
    end
    return table.concat(out, " ")
end

local function case(name, f, ...)
    local ok, r = pcall(function(...) return results(f(...)) end, ...)
    if not ok then
        -- positions differ (resty.core's file vs re.lua): keep the message
        r = "error: " .. tostring(r):gsub("^[^:]*:%d+: ", "")
    end
    ngx.say(name, ": ", r)
end

local re = ngx.re
local match, find, sub, gsub = re.match, re.find, re.sub, re.gsub

-- match: captures, named captures, options
case("match digits", match, "hello, 1234", "[0-9]+")
case("match groups", match, "hello, 1234", "([0-9])([0-9]+)")
case("match named", match, "hello, 1234", "([0-9])(?<remaining>[0-9]+)")
case("match named P", match, "hello, 1234", "(?P<first>[0-9])(?'rest'[0-9]+)")
case("match unmatched group", match, "hello", "(h)(x)?(e)")
case("match trailing unmatched", match, "ab", "(a)|(b)")
case("match no match", match, "hello", "[0-9]+")
case("match i", match, "HELLO", "hello", "i")
case("match no i", match, "HELLO", "hello")
case("match m", match, "a\nb", "^b", "m")
case("match no m", match, "a\nb", "^b")
case("match s", match, "a\nb", "a.b", "s")
case("match no s", match, "a\nb", "a.b")
case("match x", match, "abc", "a b # comment\n c", "x")
case("match a", match, "xab", "ab", "a")
case("match a at start", match, "abx", "ab", "a")
case("match jo", match, "hello, 1234", "\\d+", "jo")
case("match u", match, "héllo wörld", "w.rld", "u")
case("match u dot count", match, "é", "^.$", "u")
case("match no u dot count", match, "é", "^..$")
case("match u caseless", match, "É", "é", "iu")
case("match dup names", match, "ab", "(?<n>a)(?<n>b)", "D")
case("match dup names one", match, "b", "(?<n>a)|(?<n>b)", "D")
case("match dup names without D", match, "ab", "(?<n>a)(?<n>b)")
case("match unknown flag", match, "a", "a", "q")
case("match bad pattern", match, "a", "(a")
case("match bad pattern 2", match, "a", "[a")
case("match nothing to repeat", match, "a", "*a")
case("match nil subject", match, nil, "nil")
case("match number subject", match, 12345, "3(4)")
case("match ctx", function()
    local ctx = {}
    local m1 = match("1 22 333", "\\d+", "", ctx)
    local p1 = ctx.pos
    local m2 = match("1 22 333", "\\d+", "", ctx)
    local p2 = ctx.pos
    local m3 = match("1 22 333", "\\d+", "", ctx)
    local m4 = match("1 22 333", "\\d+", "", ctx)
    return m1[0], p1, m2[0], p2, m3[0], ctx.pos, m4
end)
case("match ctx pos", function()
    local ctx = { pos = 3 }
    local m = match("abcabc", "a", "", ctx)
    return m[0], ctx.pos
end)
case("match ctx anchored", function()
    local ctx = { pos = 2 }
    return match("abcabc", "b", "a", ctx), ctx.pos
end)
case("match ctx caret", function()
    return match("abc", "^b", "", { pos = 2 })
end)
case("match ctx lookbehind", function()
    return match("abc", "(?<=a)b", "", { pos = 2 })
end)
case("match res table", function()
    local res = { "old", "older", "oldest" }
    local m = match("ab", "(a)(b)", "", nil, res)
    return m == res, m
end)
case("match escapes", match, "a\tb 1_", "\\w\\s\\w\\s\\d\\w")
case("match \\z \\Z", function()
    return match("ab\n", "b\\Z"), match("ab\n", "b\\z"), match("ab", "b\\z")
end)
case("match dollar before newline", match, "ab\n", "b$")
case("match \\A", match, "ab", "\\Ab")
case("match \\Q\\E", match, "a.b*c", "\\Qa.b*\\Ec")
case("match \\x{}", match, "ABC", "\\x{42}")
case("match \\h", match, "a\tb", "a\\hb")
case("match \\R", match, "a\r\nb", "a\\Rb")
case("match posix class", match, "ab12", "[[:digit:]]+")
case("match possessive", match, "aaa", "a++a")
case("match atomic", match, "aaab", "(?>a+)b")
case("match lookahead", match, "price: 100 USD", "\\d+(?= USD)")
case("match backref", match, "abab", "(ab)\\1")
case("match named backref", match, "abab", "(?<x>ab)\\k<x>")
case("match \\g{-1}", match, "xyxy", "(xy)\\g{-1}")
case("match recursion", match, "(a(b)c)", "\\((?:[^()]|(?R))*\\)")
case("match inline flag", match, "aB", "a(?i)b")
case("match inline flag scoped", match, "AB", "a(?i)b")
case("match inline flag branch", match, "C", "(a(?i)b|c)")
case("match scoped flag", match, "aBc", "a(?i:b)c")
case("match brace literal", match, "a{,2}", "a{,2}")
case("match brace quantifier", match, "aaa", "a{2}")
case("match branch reset", match, "b2", "(?|a(1)|b(2))")
case("match conditional", match, "(a)", "(\\()?a(?(1)\\))")
case("match empty", match, "abc", "")
case("match \\b", match, "foo bar", "\\bbar\\b")
case("match class with ]", match, "a]b", "[]a]+")
case("match class with [", match, "a[b", "[[a]+")
case("match non-ascii bytes", match, "\255\254", "[\254\255]+")
case("match control \\c", match, "\1", "\\cA")
case("match \\e", match, "\27", "\\e")

-- find
case("find", find, "hello, 1234", "[0-9]+")
case("find nth", find, "hello, 1234", "([0-9])([0-9]+)", "", nil, 2)
case("find nth unmatched", find, "ab", "(a)(x)?", "", nil, 2)
case("find nth out of bound", find, "ab", "(a)", "", nil, 2)
case("find no match", find, "ab", "x")
case("find empty", find, "ab", "")
case("find ctx", function()
    local ctx = { pos = 5 }
    local from, to = find("a a a a", "a", "", ctx)
    return from, to, ctx.pos
end)
case("find bad pattern", find, "ab", "(")
case("find u", find, "héllo", "l+", "u")

-- gmatch
case("gmatch", function()
    local out = {}
    for m in re.gmatch("hello, world", "([a-z])[a-z]+") do
        out[#out + 1] = m[0] .. "/" .. m[1]
    end
    return table.concat(out, " ")
end)
case("gmatch empty matches", function()
    local out = {}
    for m in re.gmatch("abc", "x*") do
        out[#out + 1] = "[" .. m[0] .. "]"
    end
    return table.concat(out)
end)
case("gmatch mixed", function()
    local out = {}
    for m in re.gmatch("abc", "b*") do
        out[#out + 1] = "[" .. m[0] .. "]"
    end
    return table.concat(out)
end)
case("gmatch exhausted", function()
    local it = re.gmatch("a", "a")
    return it()[0], it(), it()
end)
case("gmatch bad pattern", re.gmatch, "a", "(")
case("gmatch named", function()
    local out = {}
    for m in re.gmatch("k1=v1,k2=v2", "(?<k>\\w+)=(?<v>\\w+)") do
        out[#out + 1] = m.k .. ":" .. m.v
    end
    return table.concat(out, ",")
end)

-- sub / gsub
case("sub template", sub, "hello, 1234", "([0-9])[0-9]", "[$0][$1]")
case("sub braces", sub, "hello, 1234", "[0-9]", "${0}00")
case("sub dollar", sub, "hello, 1234", "[0-9]", "$$")
case("sub no match", sub, "hello", "[0-9]", "x")
case("sub missing group", sub, "abc", "(b)", "[$2]")
case("sub unmatched group", sub, "abc", "(x)?b", "[$1]")
case("sub big group number", sub, "abc", "(b)", "[$10]")
case("sub named template", sub, "abc", "(?<x>b)", "[$x]")
case("sub bad template", sub, "abc", "b", "$")
case("sub bad template 2", sub, "abc", "b", "${1")
case("sub bad template 3", sub, "abc", "b", "$ x")
case("sub bad template no match", sub, "abc", "z", "${1")
case("sub function", sub, "hello, 1234", "([0-9])[0-9]", function(m)
    return "[" .. m[0] .. "][" .. m[1] .. "]"
end)
case("sub function nil", sub, "abc", "b", function() return nil end)
case("sub function number", sub, "abc", "b", function() return 42 end)
case("sub number replace", sub, "abc", "b", 7)
case("sub function dollar", sub, "abc", "b", function() return "$0" end)
case("sub x", sub, "hello, 1234", "( [0-9] ) [0-9]", function(m)
    return "[" .. m[0] .. "][" .. m[1] .. "]"
end, "x")
case("gsub template", gsub, "hello, world", "([a-z])[a-z]+", "[$0,$1]", "i")
case("gsub function", gsub, "hello, world", "([a-z])[a-z]+", function(m)
    return "[" .. m[0] .. "," .. m[1] .. "]"
end, "i")
case("gsub empty pattern", gsub, "abc", "", "-")
case("gsub x*", gsub, "abc", "x*", "-")
case("gsub b*", gsub, "abc", "b*", "-")
case("gsub b* function", gsub, "abc", "b*", function(m) return "<" .. m[0] .. ">" end)
case("gsub anchored", gsub, "aaba", "a", "x", "a")
case("gsub caret", gsub, "aaa", "^a", "x")
case("gsub multiline", gsub, "a\na\nb", "^a", "x", "m")
case("gsub u", gsub, "héllo", "l", "L", "u")
case("gsub u empty", gsub, "hé", "", "-", "u")
case("gsub no u empty", gsub, "hé", "", "-")
case("gsub bad pattern", gsub, "abc", "(", "x")
case("gsub unknown flag", gsub, "abc", "b", "x", "z")
case("gsub ipv6", gsub, "0:0:0:0:0:0:0:1", "^(0:)+|(:0)+$|:(0:)+", "::", "jo")
case("gsub dotted", gsub, "1.2.3.4", [[(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})]], "$4.$3.$2.$1", "jo")
case("gsub named function", gsub, "a=1, b=2", "(?<k>\\w)=(?<v>\\d)", function(m)
    return m.v .. "=" .. m.k
end)
case("gsub dup named function", gsub, "a1", "(?<n>[a-z])|(?<n>\\d)", function(m)
    return "<" .. table.concat(m.n, "|") .. ">"
end, "D")

-- require "ngx.re"
local split = require("ngx.re").split
case("split", split, "a,b,c", ",")
case("split empties", split, "a,,b,,", ",")
case("split capture", split, "a1b2c", "(\\d)")
case("split empty regex", split, "abc", "")
case("split max", split, "a,b,c,d", ",", nil, nil, 2)
case("split max 3", split, "a,b,c,d", ",", nil, nil, 3)
case("split leading", split, ",a,b", ",")
case("split nothing", split, "", ",")
case("split no match", split, "abc", ",")
case("split ctx", split, "a,b,c", ",", nil, { pos = 3 })
case("split regex", split, "a1b22c333d", "\\d+")
case("split bad", split, "abc", "(")
case("split res", function()
    local res = { "x", "y", "z", "w" }
    local r = split("a,b", ",", nil, nil, nil, res)
    return r == res, r
end)

-- edges
case("match ctx pos past end", match, "abc", "x", "", { pos = 10 })
case("match ctx pos at end", match, "abc", "$", "", { pos = 4 })
case("match u mid-char pos", match, "é", "x", "u", { pos = 2 })
case("match u bad subject", match, "\255", "x", "u")
case("match u ascii \\d", match, "٣3", "\\d", "u")
case("match u \\w", match, "éa", "\\w+", "u")
case("gmatch u empty", function()
    local it = re.gmatch("hé", "", "u")
    local a, b, c = it(), it(), it()
    return a and a[0], b and b[0], c and c[0]
end)
case("match long captures", match, "abcdefghijk", "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)")
case("sub $10", sub, "abcdefghijk", "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)", "$10$11$1")
