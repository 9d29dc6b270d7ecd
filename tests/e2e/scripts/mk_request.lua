-- mk.request fields, decoded args, headers, cookies, response
local r = mk.request
mk.response.status = 202
mk.response.headers["X-Mk"] = "yes"
mk.print("request_uri " .. r.request_uri)
mk.print("query_string " .. r.query_string)
mk.print("script_name " .. r.script_name)
mk.print("method " .. r.request_method)
mk.print("ua " .. tostring(r.headers.HTTP_USER_AGENT))
mk.print("server_port " .. type(r.server_port) .. ", remote_port " .. type(r.remote_port))
local t1, t2 = r.parseargs()
mk.print("a " .. t1.a .. " [" .. table.concat(t2.a, "|") .. "] flag '" .. t1.flag .. "'")
local c = mk.cookies.get_cookies()
mk.print("cookie sid=" .. tostring(c.sid) .. " theme=" .. tostring(c.theme))
mk.cookies.set_cookie{ name = "sid", value = "new value;1", path = "/app", domain = "example.com",
                       expiry = 2000000000, secure = true, httponly = true }
mk.cookie.set_cookie{ name = "theme", value = "dark", expires = 2000000000, samesite = "Lax" }
mk.print("status " .. mk.response.status)
