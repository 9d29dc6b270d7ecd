-- get_post_args, also when the body was spooled to a file (as OpenResty:
-- nil, "request body in temp file not supported")
ngx.req.read_body()
local args, err = ngx.req.get_post_args()
if not args then
    ngx.say("nil, ", err)
    return
end
ngx.say("a: ", #args.a, " b: ", args.b, " err: ", tostring(err))
