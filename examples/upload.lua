-- A form with file uploads: open /upload.lua in a browser, fill it in,
-- send it.  Shows ngx.req.get_post_args (the plain form) and
-- ngx.req.get_multipart (the upload form; an fcgi-lua extension).
-- Uploaded files live in temp files that vanish when the request ends;
-- a real application would os.rename() them somewhere permanent.

local escape = function(s)
    return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;",
                                         [">"] = "&gt;", ['"'] = "&quot;" }))
end

ngx.header["Content-Type"] = "text/html; charset=utf-8"
ngx.say([[<!doctype html><title>fcgi-lua upload</title>
<h1>Forms and uploads</h1>
<form method="post" action="upload.lua">
  <p>Plain form (urlencoded): <input name="name" placeholder="your name">
  <label><input type="checkbox" name="color" value="red"> red</label>
  <label><input type="checkbox" name="color" value="blue"> blue</label>
  <button>Send</button>
</form>
<form method="post" action="upload.lua" enctype="multipart/form-data">
  <p>Upload: <input name="title" placeholder="title">
  <input type="file" name="files" multiple>
  <button>Upload</button>
</form>]])

if ngx.req.get_method() ~= "POST" then
    return
end

local ctype = ngx.var.content_type or ""
ngx.say("<h2>You sent</h2>")
if ctype:find("multipart/form-data", 1, true) then
    local form, err = ngx.req.get_multipart()
    if not form then
        ngx.say("<p>Bad upload: ", escape(err), "</p>")
        return
    end
    ngx.say("<p>title: ", escape(form.fields.title or ""), "</p><ul>")
    for _, f in ipairs(form.files) do
        if f.filename ~= "" then
            -- Read the first bytes only: the file may be large.
            local h = assert(io.open(f.path, "rb"))
            local head = h:read(16) or ""
            h:close()
            ngx.say("<li>", escape(f.filename), " (", escape(f.content_type), "): ",
                    f.size, " bytes, starts with <code>",
                    escape((head:gsub("[^%w%p ]", "."))), "</code></li>")
        end
    end
    ngx.say("</ul>")
else
    ngx.req.read_body()
    local args = ngx.req.get_post_args()
    local colors = args.color
    if type(colors) == "table" then
        colors = table.concat(colors, ", ")
    end
    ngx.say("<p>name: ", escape(args.name or ""), "<br>colors: ",
            escape(colors or "none"), "</p>")
end
