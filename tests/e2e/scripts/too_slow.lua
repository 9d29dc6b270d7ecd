-- test_e2e_limits.py: stopped by request_timeout (2 s on the debug route)
ngx.sleep(30)
ngx.say("late")
