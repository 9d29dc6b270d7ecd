#!/usr/bin/env lua
-- a CGI script: an error status with a body; LF line ends
io.write("Status: 404 Not Found\nContent-Type: text/plain\n\nno such thing\n")
