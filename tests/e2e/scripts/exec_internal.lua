-- to an `internal` location nginx serves itself; args from the uri and the table
ngx.exec("/exec-internal/page?a=1", "c=4")
