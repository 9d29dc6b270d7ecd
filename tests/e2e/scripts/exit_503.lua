ngx.exit(503)
