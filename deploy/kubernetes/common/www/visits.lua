-- A visit counter kept in Redis, through lua-resty-redis, unmodified
-- (Debian: lua-nginx-redis): its socket calls are cosockets, so the worker
-- serves other requests while this one waits for Redis.  Every worker, and
-- every fcgi-lua host behind the same nginx, shares the count.
--
-- Where Redis is: REDIS_HOST and REDIS_PORT in fcgi-lua's environment
-- (docker-compose.yml: the `redis` service; deploy/run: its own
-- redis-server on 127.0.0.1:6380), else 127.0.0.1:6379.
-- ?reset=1 starts again from zero.
local redis = require "resty.redis"

local host = os.getenv("REDIS_HOST") or "127.0.0.1"
local port = tonumber(os.getenv("REDIS_PORT") or "") or 6379
local key = "fcgi-lua:examples:visits"

ngx.header["Content-Type"] = "text/plain; charset=utf-8"
ngx.header["Cache-Control"] = "no-store"

local red = redis:new()
red:set_timeout(1000)   -- ms, for connect, send and receive
local ok, err = red:connect(host, port)
if not ok then
    ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
    ngx.say("cannot reach Redis at ", host, ":", port, ": ", err)
    return
end

if ngx.var.arg_reset then
    red:del(key)
end
local count, err = red:incr(key)
if not count then
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    ngx.say("INCR failed: ", err)
    return
end

ngx.say("visits: ", count)
ngx.say("redis: ", host, ":", port, ", key ", key)
-- Reload a few times: the workers take turns, the count is theirs together.
ngx.say("counted by worker ", ngx.worker.pid())

-- Back to this worker's connection pool for the next request (10 s idle).
local ok, err = red:set_keepalive(10000, 32)
if not ok then
    ngx.log(ngx.WARN, "redis set_keepalive: ", err)
end
