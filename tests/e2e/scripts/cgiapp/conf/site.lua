-- cgiapp's settings, run with dofile: it sees the request's os
return {
    name = "cgiapp",
    title = "cgiapp on " .. (os.getenv("HTTP_HOST") or "?") .. " " .. (os.getenv("SERVER_PROTOCOL") or "?"),
}
