ngx.exit(404)
