-- Debian's lua-nginx-kafka (lua-resty-kafka) unmodified: a sync producer
-- against the test's broker (tests/e2e/test_e2e_kafka.py), the request
-- encoder (LuaJIT FFI int64, ngx.crc32_long), and a refused broker.
local function need(name)
    local ok, module = pcall(require, "resty." .. name)
    return ok and module or require("nginx." .. name) -- Debian's name (the oracle's)
end
local producer = need("kafka.producer")
local request = need("kafka.request")
local ffi = require "ffi"

local args = ngx.req.get_uri_args()
local topic = args.topic

-- the encoder on its own: bytes as hex
local req = request:new(request.ProduceRequest, 7, "fcgi", 0)
req:int16(1)
req:int32(1500)
req:int32(1)
req:string(topic)
req:int32(1)
req:int32(0)
req:message_set({ "key1", "hello", "key2", "world" })
req:int64(ffi.new("int64_t", 1234567890123))
local bytes = table.concat(req:package())
ngx.say("encoded: ", #bytes, " ", (bytes:gsub(".", function(c)
    return string.format("%02x", c:byte())
end)))

local brokers = { { host = "127.0.0.1", port = tonumber(args.port) } }
local p = producer:new(brokers, { request_timeout = 1000 })
for i = 1, 3 do
    local offset, err = p:send(topic, "key" .. i, "message " .. i)
    ngx.say("send ", i, ": ", tostring(offset), " ", tostring(err))
end

local refused = producer:new({ { host = "127.0.0.1", port = tonumber(args.refused) } })
local offset, err = refused:send(topic, "k", "v")
ngx.say("refused: ", tostring(offset), " ", tostring(err))
