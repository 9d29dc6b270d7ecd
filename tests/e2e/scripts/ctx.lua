ngx.ctx.n = (ngx.ctx.n or 0) + 1
ngx.say("ctx.n = ", ngx.ctx.n)
