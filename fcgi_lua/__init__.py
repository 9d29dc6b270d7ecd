"""fcgi-lua: a FastCGI responder that runs Lua web scripts OpenResty-style."""

__version__ = "0.1.0"
