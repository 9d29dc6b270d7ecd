-- loaded with loadfile: the request's os and the script's directory
local f = io.open("data/motd.txt")
local first = f and f:read("*l")
if f then f:close() end
return os.getenv("REQUEST_METHOD") .. " " .. tostring(first)
