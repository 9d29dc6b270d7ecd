ngx.exec("@exec_named")
