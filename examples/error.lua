-- A script error: the client gets a plain 500 page, the log gets the
-- traceback.  Start fcgi-lua with --debug (FCGI_LUA_ARGS=--debug bash
-- deploy/run) to see the traceback in the page too.
local function parse_order(order)
    return order.items[1].price   -- order.items is nil: runtime error
end

ngx.say("about to fail...")
parse_order({})
