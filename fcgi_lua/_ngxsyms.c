/*
 * The few nginx C functions that OpenResty's pure-Lua libraries call
 * through LuaJIT's ffi.C (lua-resty-string's resty.string.to_hex and
 * atoi).  Under OpenResty they are nginx's own exported symbols; here
 * fcgi_lua/lua/runtimes.py imports this module with RTLD_GLOBAL before
 * the Lua runtime, so ffi.C finds them by the same names.
 *
 * Each function is nginx 1.22's src/core/ngx_string.c, same semantics
 * (checked against OpenResty in tests/e2e/test_e2e_string.py).  Nothing
 * else lives here: the Python module it is built as has no functions.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define NGX_EXPORT __attribute__((visibility("default")))
#define NGX_ERROR (-1)

typedef unsigned char u_char;

/* Lowercase hex of src[0..len) into dst (2 * len bytes); returns dst's end. */
NGX_EXPORT u_char *
ngx_hex_dump(u_char *dst, const u_char *src, size_t len)
{
    static const u_char hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }
    return dst;
}

/* Decimal digits only (no sign, no space) to an intptr_t; NGX_ERROR (-1)
 * for an empty string, any other byte, or a value past INTPTR_MAX. */
NGX_EXPORT intptr_t
ngx_atoi(const u_char *line, size_t n)
{
    intptr_t value, cutoff, cutlim;

    if (n == 0) {
        return NGX_ERROR;
    }
    cutoff = INTPTR_MAX / 10;
    cutlim = INTPTR_MAX % 10;
    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9') {
            return NGX_ERROR;
        }
        if (value >= cutoff && (value > cutoff || *line - '0' > cutlim)) {
            return NGX_ERROR;
        }
        value = value * 10 + (*line - '0');
    }
    return value;
}

static struct PyModuleDef ngxsyms_module = {
    PyModuleDef_HEAD_INIT, "_ngxsyms",
    "nginx's ngx_hex_dump and ngx_atoi, for LuaJIT's ffi.C (no Python API).",
    0, NULL,
};

PyMODINIT_FUNC
PyInit__ngxsyms(void)
{
    return PyModuleDef_Init(&ngxsyms_module);
}
