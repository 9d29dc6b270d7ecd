-- cgiapp's page module: reads the request's CGI variables with os.getenv
-- and writes with print and io.write, as the script itself would.
local M = {}

-- a module's state: a fresh module per request, as in a CGI process
local pages = 0

function M.header(content_type, extra)
    print("Content-Type: " .. content_type)
    for _, line in ipairs(extra or {}) do
        print(line)
    end
    print("X-Request: " .. os.getenv("REQUEST_METHOD") .. " " .. os.getenv("SCRIPT_NAME"))
    print("")
end

function M.top(title)
    pages = pages + 1
    print("<html><head><title>" .. title .. "</title></head><body>")
    print("<p>pages rendered by this module: " .. pages .. "</p>")
end

function M.bottom()
    io.write("<p>script: ", arg[0]:match("[^/]*$"), "</p>\n</body></html>\n")
end

-- An error page, then the end of the process (the request).
function M.fail(status, message)
    io.write("Status: ", status, "\r\n", "Content-Type: text/plain\r\n\r\n")
    print("error " .. status .. ": " .. message)
    os.exit(0)
    print("never printed")
end

return M
