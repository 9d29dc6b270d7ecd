-- ngx.req.socket(true): no raw request socket over FastCGI (test_e2e_reqsocket.py)
local sock = ngx.req.socket(true)
ngx.say("unreachable ", tostring(sock))
