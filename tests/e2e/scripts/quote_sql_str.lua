-- ngx.quote_sql_str over every byte, UTF-8 and numbers (test_e2e_reqsocket.py)
local bytes = {}
for i = 0, 255 do
    bytes[#bytes + 1] = string.char(i)
end
ngx.say(ngx.quote_sql_str(table.concat(bytes)))
ngx.say(ngx.quote_sql_str(""))
ngx.say(ngx.quote_sql_str("it's \"r\195\169sum\195\169\"\\\n"))
ngx.say(ngx.quote_sql_str(42), " ", ngx.quote_sql_str(1.5))
ngx.say(pcall(ngx.quote_sql_str))
ngx.say(pcall(ngx.quote_sql_str, "a", "b"))
