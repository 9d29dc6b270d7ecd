return ngx.redirect("http://example.com/moved", 301)
