-- cgiapp's settings, run with dofile: it sees the request's os
return {
    name = "cgiapp",
    title = "cgiapp on " .. (os.getenv("SERVER_NAME") or "?") .. ":" .. (os.getenv("SERVER_PORT") or "?"),
}
