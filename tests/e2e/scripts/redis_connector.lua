-- Debian's lua-nginx-redis-connector (lua-resty-redis-connector)
-- unmodified: connection URLs, params, keepalive, against a real redis.
local ok, rc = pcall(require, "resty.redis.connector")
if not ok then
    rc = require "nginx.redis.connector" -- Debian's name (the oracle's)
end

local args = ngx.req.get_uri_args()
local port = tonumber(args.port)

local connector = rc.new({ connect_timeout = 500, read_timeout = 1000, keepalive_timeout = 5000 })
local redis, err = connector:connect({ url = "redis://127.0.0.1:" .. port .. "/2" })
ngx.say("connect: ", redis and "ok" or err)
ngx.say("set: ", tostring(redis:set(args.key, "value")))
ngx.say("get: ", tostring(redis:get(args.key)))
ngx.say("missing is ngx.null: ", tostring(redis:get(args.key .. "-missing") == ngx.null))
ngx.say("keepalive: ", tostring(connector:set_keepalive(redis)))

local again = assert(connector:connect({ host = "127.0.0.1", port = port, db = 2 }))
ngx.say("reused: ", again:get_reused_times() > 0)
ngx.say("get again: ", tostring(again:get(args.key)))
again:del(args.key)
ngx.say("keepalive: ", tostring(connector:set_keepalive(again)))

local bad, err = connector:connect({ url = "redis://127.0.0.1:" .. args.refused })
ngx.say("refused: ", tostring(bad), " ", tostring(err))
