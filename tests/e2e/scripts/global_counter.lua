counter = (counter or 0) + 1
ngx.say(counter)
