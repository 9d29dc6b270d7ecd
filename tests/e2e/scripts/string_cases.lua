-- Debian's lua-nginx-string (OpenResty's lua-resty-string) unmodified, and
-- ngx.hmac_sha1, one line each: the same output is expected from fcgi-lua
-- and from OpenResty (tests/e2e/test_e2e_string.py).  resty.string reaches
-- nginx's ngx_hex_dump / ngx_atoi through ffi.C, the others OpenSSL.
-- Debian installs them as nginx.X, the name its OpenResty knows (fcgi-lua
-- also answers to resty.X: test_e2e_string.py).

local str = require "nginx.string"
local to_hex = str.to_hex

local inputs = { "", "abc", "hello world", string.rep("0123456789", 1000), "\0\1\255" }

for _, name in ipairs({ "md5", "sha1", "sha224", "sha256", "sha384", "sha512" }) do
    local hash = require("nginx." .. name)
    for i, s in ipairs(inputs) do
        local h = hash:new()
        h:update(s)
        local one = to_hex(h:final())
        h:reset()
        for j = 1, #s, 7 do
            h:update(s:sub(j, j + 6))
        end
        ngx.say(name, " ", i, ": ", one, " ", tostring(to_hex(h:final()) == one))
    end
end

for _, s in ipairs({ "", "0", "7", "0042", "-1", "+1", " 1", "1 ", "12a", "9223372036854775807",
                     "9223372036854775808", "92233720368547758070" }) do
    ngx.say("atoi ", string.format("%q", s), ": ", str.atoi(s))
end
ngx.say("to_hex: ", to_hex(""), "|", to_hex("\0\1\127\128\255 az"))

for _, args in ipairs({ { "", "" }, { "key", "The quick brown fox jumps over the lazy dog" },
                        { string.rep("k", 100), "\0\255" }, { 12, 3.5 } }) do
    ngx.say("hmac_sha1: ", to_hex(ngx.hmac_sha1(args[1], args[2])))
end
for _, args in ipairs({ { n = 1, "k" }, { n = 3, "k", "d", "x" }, { n = 2, nil, "d" },
                        { n = 2, "k", {} } }) do
    ngx.say("hmac_sha1 error: ", select(2, pcall(ngx.hmac_sha1, unpack(args, 1, args.n))))
end
ngx.say("hmac_sha1 called by name: ",
        select(2, pcall(function() local r = ngx.hmac_sha1(nil, "d") return r end)),
        " | ", select(2, pcall(function() local r = ngx.hmac_sha1("k") return r end)))

-- random: only lengths and the hex format can be compared
local random = require "nginx.random"
for _, strong in ipairs({ false, true }) do
    local a, b = random.bytes(16, strong), random.bytes(16, strong)
    ngx.say("random ", tostring(strong), ": ", #a, " ", tostring(a ~= b), " ",
            tostring(to_hex(a):match("^[0-9a-f]+$") ~= nil), " ", #to_hex(a))
end

local aes = require "nginx.aes"
for _, spec in ipairs({ { 128, "cbc", "md5" }, { 256, "cbc", "sha256" }, { 256, "ecb", "sha1" },
                        { 192, "cfb8", "sha512" } }) do
    local cipher = aes.cipher(spec[1], spec[2])
    local a = aes:new("a secret key", "saltsalt", cipher, aes.hash[spec[3]], 3)
    local sealed = a:encrypt("the message, longer than one block")
    ngx.say("aes ", table.concat(spec, "-"), ": ", to_hex(sealed), " ", a:decrypt(sealed))
end
local a = aes:new("secret")
ngx.say("aes default: ", to_hex(a:encrypt("hi")), " ", a:decrypt(a:encrypt("hi")))
ngx.say("aes bad salt: ", select(2, aes:new("k", "short")))
local iv = aes:new("0123456789abcdef", nil, aes.cipher(128, "cbc"), { iv = "fedcba9876543210" })
ngx.say("aes iv: ", to_hex(iv:encrypt("x")))
