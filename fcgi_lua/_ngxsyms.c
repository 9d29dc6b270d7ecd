/*
 * The few nginx C functions that OpenResty's pure-Lua libraries call
 * through LuaJIT's ffi.C (lua-resty-string's resty.string.to_hex and
 * atoi), and lua-nginx-module's public C API for shared dicts
 * (src/api/ngx_http_lua_api.h: ngx_http_lua_find_zone,
 * ngx_http_lua_shared_dict_get).  Under OpenResty they are nginx's own
 * exported symbols; here fcgi_lua/lua/runtimes.py imports this module with
 * RTLD_GLOBAL before the Lua runtime, so ffi.C finds them by the same names.
 *
 * ngx_hex_dump and ngx_atoi are nginx 1.22's src/core/ngx_string.c, same
 * semantics (checked against OpenResty in tests/e2e/test_e2e_string.py).
 * The shared dict functions call back into fcgi_lua/shdict.py's store
 * (fcgi_lua/lua/shared_dicts.py registers it with set_shdict): a zone is
 * an opaque non-NULL pointer, one per zone, as nginx's ngx_shm_zone_t *
 * is to its callers; the values are copied out as
 * ngx_http_lua_shared_dict_get does, with its return codes.
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

/* -- lua-nginx-module's shared dict C API -------------------------------- */

#define NGX_OK 0
#define NGX_DONE (-4)
#define NGX_DECLINED (-5)
#define SHDICT_TBOOLEAN 1
#define SHDICT_TNUMBER 3
#define SHDICT_TSTRING 4

typedef struct {
    size_t      len;
    u_char     *data;
} ngx_str_t;

typedef struct {
    uint8_t         type;
    union {
        int         b;
        double      n;
        ngx_str_t   s;
    } value;
} ngx_http_lua_value_t;

/* set_shdict's: name -> zone id (0: none); (id, key) -> rc or (type, value) */
static PyObject *shdict_find;
static PyObject *shdict_get;
/* zone id n is the pointer zone_handles + n (1 <= n <= zone_count) */
static char *zone_handles;
static Py_ssize_t zone_count;

NGX_EXPORT void *
ngx_http_lua_find_zone(u_char *name_data, size_t name_len)
{
    PyGILState_STATE gil;
    PyObject *res;
    Py_ssize_t id = 0;

    gil = PyGILState_Ensure();
    if (shdict_find != NULL && name_data != NULL) {
        res = PyObject_CallFunction(shdict_find, "y#", (const char *) name_data,
                                    (Py_ssize_t) name_len);
        if (res != NULL) {
            id = PyLong_AsSsize_t(res);
            Py_DECREF(res);
        }
        if (PyErr_Occurred()) {
            PyErr_Clear();
            id = 0;
        }
    }
    PyGILState_Release(gil);
    if (id < 1 || id > zone_count) {
        return NULL;
    }
    return zone_handles + id;
}

NGX_EXPORT intptr_t
ngx_http_lua_shared_dict_get(void *zone, u_char *key_data, size_t key_len,
    ngx_http_lua_value_t *value)
{
    PyGILState_STATE gil;
    PyObject *res, *item;
    Py_ssize_t id;
    intptr_t rc = NGX_ERROR;
    const char *data;
    Py_ssize_t len;

    if (zone == NULL || zone_handles == NULL) {
        return NGX_ERROR;
    }
    id = (char *) zone - zone_handles;
    if (id < 1 || id > zone_count) {
        return NGX_ERROR;
    }
    gil = PyGILState_Ensure();
    if (shdict_get == NULL) {
        goto done;
    }
    res = PyObject_CallFunction(shdict_get, "ny#", id, (const char *) key_data,
                                (Py_ssize_t) key_len);
    if (res == NULL) {
        goto done;
    }
    if (PyLong_Check(res)) {  /* NGX_DECLINED: none, NGX_DONE: expired */
        rc = (intptr_t) PyLong_AsSsize_t(res);
        Py_DECREF(res);
        goto done;
    }
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        goto done;
    }
    value->type = (uint8_t) PyLong_AsLong(PyTuple_GET_ITEM(res, 0));
    item = PyTuple_GET_ITEM(res, 1);
    switch (value->type) {
    case SHDICT_TSTRING:
        if (value->value.s.data == NULL || value->value.s.len == 0) {
            break;  /* nginx: "no string buffer initialized" */
        }
        if (PyBytes_AsStringAndSize(item, (char **) &data, &len) < 0) {
            break;
        }
        if ((size_t) len > value->value.s.len) {
            len = (Py_ssize_t) value->value.s.len;
        } else {
            value->value.s.len = (size_t) len;
        }
        memcpy(value->value.s.data, data, (size_t) len);
        rc = NGX_OK;
        break;
    case SHDICT_TNUMBER:
        value->value.n = PyFloat_AsDouble(item);
        rc = NGX_OK;
        break;
    case SHDICT_TBOOLEAN:
        value->value.b = PyObject_IsTrue(item);
        rc = NGX_OK;
        break;
    default:
        break;  /* nginx: "bad lua value type" (a list) */
    }
    Py_DECREF(res);
done:
    if (PyErr_Occurred()) {
        PyErr_Clear();
        rc = NGX_ERROR;
    }
    PyGILState_Release(gil);
    return rc;
}

static PyObject *
set_shdict(PyObject *self, PyObject *args)
{
    PyObject *find, *get;
    Py_ssize_t count;
    char *handles;

    (void) self;
    if (!PyArg_ParseTuple(args, "OOn", &find, &get, &count)) {
        return NULL;
    }
    if (count < 0) {
        PyErr_SetString(PyExc_ValueError, "negative zone count");
        return NULL;
    }
    /* handles given out before stay valid: the old block is never freed */
    if (count > zone_count) {
        handles = PyMem_RawCalloc((size_t) count + 1, 1);
        if (handles == NULL) {
            return PyErr_NoMemory();
        }
        zone_handles = handles;
        zone_count = count;
    }
    Py_INCREF(find);
    Py_INCREF(get);
    Py_XSETREF(shdict_find, find);
    Py_XSETREF(shdict_get, get);
    Py_RETURN_NONE;
}

static PyMethodDef ngxsyms_methods[] = {
    {"set_shdict", set_shdict, METH_VARARGS,
     "set_shdict(find, get, zone_count): the store behind "
     "ngx_http_lua_find_zone and ngx_http_lua_shared_dict_get."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ngxsyms_module = {
    PyModuleDef_HEAD_INIT, "_ngxsyms",
    "nginx's ngx_hex_dump and ngx_atoi and lua-nginx-module's shared dict C "
    "API, for LuaJIT's ffi.C.",
    0, ngxsyms_methods,
};

PyMODINIT_FUNC
PyInit__ngxsyms(void)
{
    return PyModuleDef_Init(&ngxsyms_module);
}
