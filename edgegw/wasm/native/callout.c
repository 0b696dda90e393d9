/* edgegw.wasm._native, callout.c: the hostcalls of an http_call's answer, whole in C.
 *
 * A filter that calls out once per request (rate_limit's global mode: the store) makes
 * the same four hostcalls in every proxy_on_http_call_response: set_effective_context
 * (its stream), get_header_map_value(HTTP_CALL_RESPONSE_HEADERS, ":status"),
 * get_buffer_bytes(HTTP_CALL_RESPONSE_BODY) and continue_stream. Each is answered here
 * as the Python method answers it (wasm/hostcalls.py: proxy_set_effective_context,
 * _map/CallMap.get, _buffer, proxy_continue_stream); anything else (another map or
 * buffer, a stream that is not a plain State, an unknown context) is "not that case"
 * and the Python method, which keeps every rule, answers it. The answer being delivered
 * is the VM's ``call_response`` field (Plugin._delivered sets it around the call).
 */
#include "native.h"

#include <string.h>

#define STATUS_OK 0
#define STATUS_BAD_ARGUMENT 2
#define MAP_HTTP_CALL_RESPONSE_HEADERS 6
#define BUFFER_HTTP_CALL_RESPONSE_BODY 4
#define LAST_STREAM_TYPE 3 /* StreamType: REQUEST 0, RESPONSE 1, DOWNSTREAM 2, UPSTREAM 3 */

PyObject *
native_call_status(PhaseVm *vm, uint64_t map, PyObject *key)
{
    PyObject *response = vm->call_response, *status;
    long code;

    if (map != MAP_HTTP_CALL_RESPONSE_HEADERS || response == NULL || response == Py_None ||
        PyBytes_GET_SIZE(key) != 7 || memcmp(PyBytes_AS_STRING(key), ":status", 7) != 0)
        return NULL;
    status = PyObject_GetAttrString(response, "status");
    if (status == NULL)
        return NULL;
    code = PyLong_Check(status) ? PyLong_AsLong(status) : -1;
    Py_DECREF(status);
    if (code == -1) { /* not a plain int: str(status) is Python's (CallMap._pseudo) */
        PyErr_Clear();
        return NULL;
    }
    return PyBytes_FromFormat("%ld", code);
}

/* get_buffer_bytes(buffer, start, max_size, ptr_ptr, size_ptr) of the call's body. */
static int
call_body(PhaseVm *vm, GuestMemory *m, PyObject *alloc, RawVal *vals, int *status)
{
    PyObject *response = vm->call_response, *body, *value;
    uint64_t start = vals[1].lo & 0xFFFFFFFFu, max = vals[2].lo & 0xFFFFFFFFu;
    Py_ssize_t len, take;
    int rc;

    if ((vals[0].lo & 0xFFFFFFFFu) != BUFFER_HTTP_CALL_RESPONSE_BODY || response == NULL ||
        response == Py_None)
        return 0;
    body = PyObject_GetAttrString(response, "body");
    if (body == NULL)
        return -1;
    len = PyBytes_Check(body) ? PyBytes_GET_SIZE(body) : -1;
    if (len < 0 || start > (uint64_t)len) { /* not bytes, or BAD_ARGUMENT: Python says */
        Py_DECREF(body);
        return 0;
    }
    take = (Py_ssize_t)((uint64_t)len - start < max ? (uint64_t)len - start : max);
    value = start == 0 && take == len
                ? body
                : PyBytes_FromStringAndSize(PyBytes_AS_STRING(body) + start, take);
    if (value != body)
        Py_DECREF(body);
    if (value == NULL)
        return -1;
    rc = put_answer(m, alloc, value, vals[3].lo, vals[4].lo, status);
    Py_DECREF(value);
    return rc < 0 ? -1 : 1;
}

/* set_effective_context(context_id): the root context, or an open stream. */
static int
effective(PhaseVm *vm, RawVal *vals, int *status)
{
    uint32_t context = (uint32_t)vals[0].lo;
    PyObject *key, *state;

    if (context == ROOT_CONTEXT) {
        Py_XSETREF(vm->current, Py_NewRef(Py_None));
        *status = STATUS_OK;
        return 1;
    }
    key = PyLong_FromUnsignedLong(context);
    if (key == NULL)
        return -1;
    state = PyDict_GetItemWithError(vm->streams, key); /* borrowed */
    Py_DECREF(key);
    if (state == NULL)
        return PyErr_Occurred() ? -1 : 0; /* unknown: BAD_ARGUMENT, from Python */
    Py_XSETREF(vm->current, Py_NewRef(state));
    *status = STATUS_OK;
    return 1;
}

/* continue_stream(stream_type): StreamState.wake() of the current stream. */
static int
resume(PhaseVm *vm, RawVal *vals, int *status)
{
    PyObject *state = vm->current, *fut, *done;
    int is_done;

    if ((vals[0].lo & 0xFFFFFFFFu) > LAST_STREAM_TYPE || state == NULL || state == Py_None ||
        Py_TYPE(state) != phase_state_class) /* a subclass may wake otherwise */
        return 0;
    fut = ((PhaseState *)state)->resume;
    if (fut != NULL && fut != Py_None) {
        done = PyObject_CallMethod(fut, "done", NULL);
        is_done = done == NULL ? -1 : PyObject_IsTrue(done);
        Py_XDECREF(done);
        if (is_done < 0)
            return -1;
        if (!is_done) {
            PyObject *set = PyObject_CallMethod(fut, "set_result", "O", Py_None);
            if (set == NULL)
                return -1;
            Py_DECREF(set);
        }
    }
    *status = STATUS_OK;
    return 1;
}

int
native_fast_callout(PhaseVm *vm, GuestMemory *m, PyObject *alloc, int edit, RawVal *vals,
                    int *status)
{
    if (vm == NULL || vm->closed)
        return 0;
    switch (edit) {
    case EDIT_CALL_BODY:
        return m->mem == NULL || alloc == NULL ? 0 : call_body(vm, m, alloc, vals, status);
    case EDIT_EFFECTIVE:
        return effective(vm, vals, status);
    case EDIT_CONTINUE:
        return resume(vm, vals, status);
    default:
        return 0;
    }
}

/* decode_pairs(data) -> [(key, value), ...] | None: a proxy-wasm header map as the guest
 * serializes it (count, (key_len, value_len)*, then each key and value NUL-terminated;
 * u32 little-endian), as wasm/abi.py's decode_pairs_py reads it: None when malformed.
 * Every http_call and local reply of a filter is one. */
static PyObject *
decode_pairs(PyObject *module, PyObject *arg)
{
    const uint8_t *data;
    Py_ssize_t size;
    uint64_t count, pos;
    PyObject *out;

    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "decode_pairs() takes bytes");
        return NULL;
    }
    data = (const uint8_t *)PyBytes_AS_STRING(arg);
    size = PyBytes_GET_SIZE(arg);
    if (size < 4)
        return size == 0 ? PyList_New(0) : Py_NewRef(Py_None);
    count = (uint64_t)data[0] | (uint64_t)data[1] << 8 | (uint64_t)data[2] << 16 |
            (uint64_t)data[3] << 24;
    pos = 4 + 8 * count;
    if (pos > (uint64_t)size)
        Py_RETURN_NONE;
    out = PyList_New((Py_ssize_t)count);
    if (out == NULL)
        return NULL;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *sizes = data + 4 + 8 * i;
        uint64_t klen = (uint64_t)sizes[0] | (uint64_t)sizes[1] << 8 |
                        (uint64_t)sizes[2] << 16 | (uint64_t)sizes[3] << 24;
        uint64_t vlen = (uint64_t)sizes[4] | (uint64_t)sizes[5] << 8 |
                        (uint64_t)sizes[6] << 16 | (uint64_t)sizes[7] << 24;
        uint64_t value = pos + klen + 1, end = value + vlen + 1;
        PyObject *pair;

        if (end > (uint64_t)size) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        pair = Py_BuildValue("(y#y#)", (const char *)data + pos, (Py_ssize_t)klen,
                             (const char *)data + value, (Py_ssize_t)vlen);
        if (pair == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, pair);
        pos = end;
    }
    return out;
}

static PyMethodDef callout_methods[] = {
    {"decode_pairs", decode_pairs, METH_O,
     "decode_pairs(data) -> list of (key, value) | None: a serialized header map "
     "(proxy-wasm), None when malformed."},
    {NULL, NULL, 0, NULL},
};

int
native_callout_add(PyObject *module)
{
    return PyModule_AddFunctions(module, callout_methods);
}
