/* edgegw.wasm._native, headers.c: the header-map hostcalls' common case, whole in C.
 *
 * proxy_{get,add,replace,remove}_header_map_value on the request (map 0) or response
 * (map 2) headers of the filter VM's current stream, as state.RequestMap / ResponseMap
 * and edgegw.headers.HeaderMap do them: names compared with their lengths, the first of
 * repeated headers answered, a replace taking the first one's place. Anything else (a
 * pseudo-header edit, another map, a pair that is not (bytes, bytes), a field that
 * check_field would refuse) is "not that case": the Python method, which keeps every
 * rule, answers it. What C reads per call is typed: the VM's current State (a Vm field),
 * the State's Exchange (a State field), the Exchange's fields (native_ex_get).
 */
#include "native.h"

#include <string.h>

/* The exchange of vm's current stream (a new reference) when map is its request headers
 * (0) or, once ex.status is set, its response headers (2); NULL without an error when
 * there is none (no stream, no response yet, another map). */
static PyObject *
stream_exchange(PhaseVm *vm, uint64_t map)
{
    PyObject *state = vm->current, *ex;

    if ((map != 0 && map != 2) || state == NULL || state == Py_None)
        return NULL;
    /* A State's exchange is its field; another object Python put there is asked. */
    ex = PyObject_TypeCheck(state, &PhaseState_Type) ? Py_XNewRef(((PhaseState *)state)->ex)
                                                     : PyObject_GetAttrString(state, "ex");
    if (ex == NULL)
        return NULL;
    if (map == 2) { /* no response yet: the map does not exist (impl answers NOT_FOUND) */
        PyObject *status = native_ex_get(ex, EX_STATUS);
        int has = status == NULL ? -1 : PyObject_IsTrue(status);
        Py_XDECREF(status);
        if (has <= 0)
            Py_CLEAR(ex);
    }
    return ex;
}

/* The stream's own header list, ex.request_headers (map 0) or ex.response_headers
 * (map 2); NULL as stream_exchange. */
static PyObject *
stream_headers(PhaseVm *vm, uint64_t map)
{
    PyObject *ex = stream_exchange(vm, map), *headers;

    if (ex == NULL)
        return NULL;
    headers = native_ex_get(ex, map == 0 ? EX_REQUEST_HEADERS : EX_RESPONSE_HEADERS);
    Py_DECREF(ex);
    if (headers != NULL && !PyList_CheckExact(headers))
        Py_CLEAR(headers);
    return headers;
}

/* A pseudo-header of the stream's own headers, as state.RequestMap / ResponseMap make
 * them: :authority, :path, :method, :scheme from the exchange's fields (map 0), :status
 * (map 2). Bytes; None for another name (not in the map); NULL without an error when
 * there is no such map (impl decides), with one on failure. */
static PyObject *
pseudo_value(PhaseVm *vm, uint64_t map, PyObject *key)
{
    static const struct {
        const char *name;
        ExField field;
    } request[] = {{":authority", EX_AUTHORITY},
                   {":path", EX_PATH},
                   {":method", EX_METHOD},
                   {":scheme", EX_SCHEME}};
    const char *name = PyBytes_AS_STRING(key);
    size_t len = (size_t)PyBytes_GET_SIZE(key);
    PyObject *ex = stream_exchange(vm, map), *field = NULL, *value;

    if (ex == NULL)
        return NULL;
    /* Compared with their lengths, as Python compares bytes: the guest's key may hold
     * a NUL (":status\0junk" is no pseudo-header, for the Python path either). */
    if (map == 2 && len == strlen(":status") && memcmp(name, ":status", len) == 0) {
        PyObject *status = native_ex_get(ex, EX_STATUS);
        field = status == NULL ? NULL : PyObject_Str(status);
        Py_XDECREF(status);
    }
    for (size_t i = 0; map == 0 && i < sizeof(request) / sizeof(request[0]); i++) {
        if (len == strlen(request[i].name) && memcmp(name, request[i].name, len) == 0) {
            field = native_ex_get(ex, request[i].field);
            break;
        }
    }
    Py_DECREF(ex);
    if (field == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    value = PyUnicode_Check(field) ? PyUnicode_AsLatin1String(field) : NULL;
    if (value == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "a pseudo-header's field is not a str");
    Py_DECREF(field);
    return value;
}

/* 1: item is a (bytes, bytes) pair named key; 0: another pair; -1: not such a pair
 * (then impl decides). */
static int
pair_named(PyObject *item, PyObject *key)
{
    PyObject *name;

    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 ||
        !PyBytes_CheckExact(name = PyTuple_GET_ITEM(item, 0)) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(item, 1)))
        return -1;
    return PyBytes_GET_SIZE(name) == PyBytes_GET_SIZE(key) &&
           memcmp(PyBytes_AS_STRING(name), PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)) == 0;
}

/* headers without the pairs named key, the first one's position in *at (-1: none);
 * NULL without an error when an item is not a (bytes, bytes) pair (impl decides). */
static PyObject *
without(PyObject *headers, PyObject *key, Py_ssize_t *at)
{
    PyObject *kept = PyList_New(0);

    *at = -1;
    for (Py_ssize_t i = 0; kept != NULL && i < PyList_GET_SIZE(headers); i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        int named = pair_named(item, key);
        if (named < 0) {
            Py_CLEAR(kept);
            break;
        }
        if (named) {
            if (*at < 0)
                *at = PyList_GET_SIZE(kept);
        } else if (PyList_Append(kept, item) < 0) {
            Py_CLEAR(kept);
        }
    }
    return kept;
}

/* edgegw.headers.check_field for an ordinary header: the name is a token (RFC 9110 §5.1)
 * and the value holds no NUL, CR or LF (§5.5). A pair failing it is left to the Python
 * method, which raises InvalidHeader (the filter traps; its on_error applies). */
static int
field_ok(PyObject *key, PyObject *value)
{
    const unsigned char *k = (const unsigned char *)PyBytes_AS_STRING(key);
    const char *v = PyBytes_AS_STRING(value);
    Py_ssize_t klen = PyBytes_GET_SIZE(key), vlen = PyBytes_GET_SIZE(value);

    for (Py_ssize_t i = 0; i < klen; i++) {
        unsigned char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL)))
            return 0;
    }
    return memchr(v, '\0', (size_t)vlen) == NULL && memchr(v, '\r', (size_t)vlen) == NULL &&
           memchr(v, '\n', (size_t)vlen) == NULL;
}

/* add / replace / remove_header_map_value(map, key[, value]) for an ordinary header of
 * the stream's own request or response headers, edited as HeaderMap.add / replace /
 * remove do, without a Python frame. 1: done; 0: not that case (impl decides, nothing
 * was changed); -1: an error is set. */
int
native_fast_edit(PhaseVm *vm, int edit, uint64_t map, PyObject *key, PyObject *value)
{
    PyObject *headers, *kept = NULL, *pair = NULL;
    Py_ssize_t at;
    int done = 0;

    if (vm == NULL || edit == 0 || (edit != EDIT_REMOVE) != (value != NULL))
        return 0; /* not a shape set_fast_edit accepted */
    if (PyBytes_GET_SIZE(key) == 0 || PyBytes_AS_STRING(key)[0] == ':')
        return 0; /* pseudo-headers live in the Exchange's fields */
    if (value != NULL && !field_ok(key, value))
        return 0; /* the Python method raises InvalidHeader */
    headers = stream_headers(vm, map);
    if (headers == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (edit != EDIT_REMOVE && (pair = PyTuple_Pack(2, key, value)) == NULL)
        done = -1;
    else if (edit == EDIT_ADD)
        done = PyList_Append(headers, pair) < 0 ? -1 : 1;
    else if ((kept = without(headers, key, &at)) == NULL)
        done = PyErr_Occurred() ? -1 : 0;
    else if (edit == EDIT_REPLACE &&
             PyList_Insert(kept, at < 0 ? PyList_GET_SIZE(kept) : at, pair) < 0)
        done = -1; /* the new pair takes the first one's place (HeaderMap.replace) */
    else
        done = PyList_SetSlice(headers, 0, PyList_GET_SIZE(headers), kept) < 0 ? -1 : 1;
    Py_XDECREF(kept);
    Py_XDECREF(pair);
    Py_DECREF(headers);
    return done;
}

/* The first value of header key (an ordinary name) in the stream's own headers, as
 * HeaderMap.get finds it (Envoy answers the first of repeated headers). Bytes; None
 * when there is none; NULL without an error when it is not that case (impl decides). */
static PyObject *
header_value(PhaseVm *vm, uint64_t map, PyObject *key)
{
    PyObject *headers = stream_headers(vm, map), *value = Py_None;

    if (headers == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        int named = pair_named(item, key);
        if (named < 0) {
            value = NULL;
            break;
        }
        if (named) {
            value = PyTuple_GET_ITEM(item, 1);
            break;
        }
    }
    Py_XINCREF(value);
    Py_DECREF(headers);
    return value;
}

/* get_header_map_value(map, key, ptr_ptr, size_ptr) for a header of the stream's own
 * request or response headers, pseudo-headers included: the value copied into memory
 * from the guest's allocator, its address and size written at ptr_ptr and size_ptr, as
 * HeaderMap.get and put_answer do. 1: answered with *status; 0: not that
 * case (impl decides); -1: an error is set (the allocator trapped). */
int
native_fast_get(PhaseVm *vm, GuestMemory *m, PyObject *alloc, uint64_t map, PyObject *key,
                uint64_t ptr_ptr, uint64_t size_ptr, int *status)
{
    PyObject *value;

    if (vm == NULL || alloc == NULL || PyBytes_GET_SIZE(key) == 0)
        return 0;
    if (map == 6) /* an http_call's answer: its :status (callout.c) */
        value = native_call_status(vm, map, key);
    else
        value = PyBytes_AS_STRING(key)[0] == ':' ? pseudo_value(vm, map, key)
                                                 : header_value(vm, map, key);
    return answer_found(m, alloc, value, ptr_ptr, size_ptr, status);
}
