# fcgi-lua in a container: `fcgi-lua serve` as an unprivileged user, on a
# Unix socket in /run/fcgi-lua (a volume the front server's container
# mounts too), running the scripts under /srv/www.  docker-compose.yml runs
# it with nginx, Monkey and Redis: `docker compose up`.  Alone:
#
#   docker build -t fcgi-lua .
#   docker run -v fcgi-lua-socket:/run/fcgi-lua -v "$PWD/examples:/srv/www:ro" fcgi-lua
#
# Debian 12 (bookworm), pinned: the release CI tests on, whose lua-nginx-*
# packages are installed below.
FROM python:3.11-slim-bookworm

# Pure-Lua OpenResty libraries that scripts `require` (resty.redis ...,
# docs/lua-api.md "Cosockets").  Debian packages them as lua-nginx-*, with
# a dependency on nginx-extras that fcgi-lua does not need: unpack their
# Lua files only.  lua-cjson is the C module OpenResty bundles (examples/
# json.lua; it needs only libc, and LuaJIT loads it from Debian's lua/5.1
# directory, docs/c-modules.md).
WORKDIR /tmp/lua-libs
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get download lua-nginx-redis lua-nginx-memcached lua-nginx-dns \
        lua-nginx-websocket lua-nginx-cookie lua-cjson; \
    for deb in ./*.deb; do dpkg-deb -x "$deb" /; done; \
    rm -rf /tmp/lua-libs/* /var/lib/apt/lists/* /usr/share/doc/lua-nginx-*

# The package, from this repository (.dockerignore keeps the rest out).
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY fcgi_lua ./fcgi_lua
RUN pip install --no-cache-dir --disable-pip-version-check . \
    && rm -rf /src/build /src/*.egg-info

# The stack's configuration (docker-compose.yml mounts deploy/fcgi-lua.toml
# over it) and the health check's FastCGI client.
COPY deploy/fcgi-lua.toml /etc/fcgi-lua/fcgi-lua.toml
COPY deploy/fcgi-lua-ping /usr/local/bin/fcgi-lua-ping

# Unprivileged.  /run/fcgi-lua is owned by that user so that a fresh named
# volume mounted there (which starts as a copy of this directory) is too.
RUN groupadd --system --gid 10001 fcgi-lua \
    && useradd --system --uid 10001 --gid fcgi-lua --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin fcgi-lua \
    && install -d -o fcgi-lua -g fcgi-lua -m 0755 /run/fcgi-lua /srv/www \
    && chmod 0755 /usr/local/bin/fcgi-lua-ping
# By number: a runtime that checks runAsNonRoot needs no passwd lookup.
USER 10001:10001
WORKDIR /srv/www

# Answered by fcgi-lua itself (ping_path in the config), over FastCGI.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["fcgi-lua-ping", "unix:/run/fcgi-lua/fcgi-lua.sock", "/fcgi-ping"]

# SIGTERM (docker stop): stop accepting, finish in-flight requests within
# shutdown_timeout (10 s, under compose's stop_grace_period), exit 0.
STOPSIGNAL SIGTERM
CMD ["fcgi-lua", "serve", "--config", "/etc/fcgi-lua/fcgi-lua.toml", \
     "--listen", "unix:/run/fcgi-lua/fcgi-lua.sock", "--root", "/srv/www"]
