-- A cookie page: open http://127.0.0.1:8080/cookies.lua in a browser.
-- Shows the cookies the browser sent, sets one from the form, deletes one
-- from a link.  Reading: ngx.var.cookie_NAME / ngx.var.http_cookie;
-- writing: ngx.header["Set-Cookie"] (a table sets several at once).
-- lua-resty-cookie (Debian: lua-nginx-cookie) does the same with
-- require "resty.cookie"; see docs/lua-api.md#cookies.

local function html(s)
    return (tostring(s):gsub("[&<>\"']", {
        ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;",
    }))
end

local args = ngx.req.get_uri_args()
local here = ngx.var.uri

-- ?set=NAME&value=VALUE: set a cookie for an hour, then show the page again
if type(args.set) == "string" and args.set:match("^[%w_%-]+$") then
    local value = type(args.value) == "string" and args.value or ""
    ngx.header["Set-Cookie"] = args.set .. "=" .. ngx.escape_uri(value)
                               .. "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
    return ngx.redirect(here, ngx.HTTP_SEE_OTHER)
end

-- ?delete=NAME: expire it
if type(args.delete) == "string" and args.delete:match("^[%w_%-]+$") then
    ngx.header["Set-Cookie"] = args.delete .. "=; Path=/; Max-Age=0"
    return ngx.redirect(here, ngx.HTTP_SEE_OTHER)
end

ngx.header["Content-Type"] = "text/html; charset=utf-8"
ngx.say("<!doctype html><title>Cookies</title><h1>Cookies</h1>")

local cookies = {}
for pair in (ngx.var.http_cookie or ""):gmatch("[^;]+") do
    local name, value = pair:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if name and name ~= "" then
        cookies[#cookies + 1] = { name, ngx.unescape_uri(value) }
    end
end

if #cookies == 0 then
    ngx.say("<p>Your browser sent no cookie yet.</p>")
else
    ngx.say("<table border=1><tr><th>name</th><th>value</th><th></th></tr>")
    for _, c in ipairs(cookies) do
        ngx.say("<tr><td>", html(c[1]), "</td><td>", html(c[2]), "</td><td><a href=\"",
                html(here), "?delete=", ngx.escape_uri(c[1]), "\">delete</a></td></tr>")
    end
    ngx.say("</table>")
end

ngx.say([[<form method="get"><p>Set a cookie for an hour:
  <input name="set" placeholder="name" pattern="[A-Za-z0-9_-]+" required>
  <input name="value" placeholder="value">
  <button>set</button></p></form>]])
ngx.say("<p>ngx.var.cookie_flavour = ", html(ngx.var.cookie_flavour or "nil"), "</p>")
