-- the worker's pid (test_e2e_cgi.py: os.exit in a CGI request keeps it)
ngx.say(ngx.worker.pid())
