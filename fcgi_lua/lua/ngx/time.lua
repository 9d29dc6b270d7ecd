-- ngx.now, ngx.time, ngx.update_time and the date functions (ngx_http_lua_time.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local tonumber = tonumber
local ipairs = ipairs
local error = error
local format = string.format
local match = string.match
local floor = math.floor
local os_date = os.date
local py_update_time = helpers.update_time

local WEEKDAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
local MONTH_NUM = {}
for i, m in ipairs(MONTHS) do
    MONTH_NUM[m] = i
end

function ngx.now()
    return floor(core.now_cache * 1000) / 1000
end

function ngx.time()
    return floor(core.now_cache)
end

function ngx.update_time()
    core.now_cache = py_update_time()
end

function ngx.today()
    return os_date("%Y-%m-%d", floor(core.now_cache))
end

function ngx.localtime()
    return os_date("%Y-%m-%d %H:%M:%S", floor(core.now_cache))
end

function ngx.utctime()
    return os_date("!%Y-%m-%d %H:%M:%S", floor(core.now_cache))
end

local function check_time(sec, fname)
    local n = tonumber(sec)
    if n == nil then
        error("bad argument #1 to '" .. fname .. "' (number expected, got "
              .. type(sec) .. ")", 3)
    end
    return floor(n)
end

function ngx.http_time(sec)
    local t = os_date("!*t", check_time(sec, "http_time"))
    return format("%s, %02d %s %d %02d:%02d:%02d GMT", WEEKDAYS[t.wday], t.day,
                  MONTHS[t.month], t.year, t.hour, t.min, t.sec)
end

function ngx.cookie_time(sec)
    local t = os_date("!*t", check_time(sec, "cookie_time"))
    -- nginx: Netscape 3 wants 2-digit years, but only up to 2037.
    local year = t.year
    if year <= 2037 then
        year = format("%02d", year % 100)
    end
    return format("%s, %02d-%s-%s %02d:%02d:%02d GMT", WEEKDAYS[t.wday], t.day,
                  MONTHS[t.month], year, t.hour, t.min, t.sec)
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
local function days_from_civil(y, m, d)
    if m <= 2 then
        y = y - 1
    end
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

function ngx.parse_http_time(str)
    if type(str) ~= "string" then
        error("bad argument #1 to 'parse_http_time' (string expected, got "
              .. type(str) .. ")", 2)
    end
    local d, mon, y, h, mi, s
    -- RFC 1123: "Thu, 18 Nov 2010 11:27:35 GMT"
    d, mon, y, h, mi, s = match(str, "^%a+, (%d%d?) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d)")
    if not d then
        -- RFC 850: "Thursday, 18-Nov-10 11:27:35 GMT"
        d, mon, y, h, mi, s = match(str, "^%a+, (%d%d?)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d)")
        if y then
            y = tonumber(y)
            y = y + (y < 70 and 2000 or 1900)
        end
    end
    if not d then
        -- asctime: "Thu Nov 18 11:27:35 2010"
        mon, d, h, mi, s, y = match(str, "^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)")
    end
    if not d then
        return nil
    end
    local m = MONTH_NUM[mon]
    d, y, h, mi, s = tonumber(d), tonumber(y), tonumber(h), tonumber(mi), tonumber(s)
    if not m or d < 1 or d > 31 or h > 23 or mi > 59 or s > 59 then
        return nil
    end
    return ((days_from_civil(y, m, d) * 24 + h) * 60 + mi) * 60 + s
end
