/* edgegw.wasm._native, property.c: proxy_get_property's common case, whole in C.
 *
 * The bundled filters read a few properties on every request: ab_flags and geo whether
 * the peer is trusted (edgegw.peer_trusted) and the host's GeoIP answer
 * (edgegw.geo.country), rate_limit the client address (source.address). Through the
 * Python method each read cost a hostcall into Python, a key built from the path and a
 * walk of wasm/properties.py's rules (docs/benchmarks.md). Here those three paths, in
 * their NUL-separated form, are answered from the stream's Exchange as properties.py
 * answers them, while no filter has set a property on the stream (ex.properties empty:
 * a set one would come first). Anything else is "not that case": the Python method,
 * which keeps every rule, answers it (a root context, other paths, dotted paths, a
 * configured GeoIP lookup, an Exchange whose fields are not the usual types).
 */
#include "native.h"

#include <string.h>

#define PATH(literal) {literal, sizeof(literal) - 1}
static const struct {
    const char *text;
    size_t len;
} paths[] = {PATH("edgegw\0peer_trusted"), PATH("edgegw\0geo\0country"),
             PATH("source\0address")};
enum { PEER_TRUSTED, GEO_COUNTRY, SOURCE_ADDRESS, PATHS };

/* Which of paths[] `path` is, trailing NULs ignored as properties.py ignores them; -1:
 * none. */
static int
which(PyObject *path)
{
    const char *text = PyBytes_AS_STRING(path);
    size_t len = (size_t)PyBytes_GET_SIZE(path);

    while (len > 0 && text[len - 1] == '\0')
        len--;
    for (int i = 0; i < PATHS; i++)
        if (paths[i].len == len && memcmp(paths[i].text, text, len) == 0)
            return i;
    return -1;
}

/* f"{client[0]}:{client[1]}" latin-1 encoded, for a (str, int) tuple (a new reference);
 * NULL without an error for any other shape, with one when encoding fails (as in
 * Python). */
static PyObject *
source_address(PyObject *client)
{
    PyObject *text, *out;

    if (!PyTuple_CheckExact(client) || PyTuple_GET_SIZE(client) < 2 ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(client, 0)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(client, 1)))
        return NULL;
    text = PyUnicode_FromFormat("%U:%S", PyTuple_GET_ITEM(client, 0),
                                PyTuple_GET_ITEM(client, 1));
    if (text == NULL)
        return NULL;
    out = PyUnicode_AsLatin1String(text);
    Py_DECREF(text);
    return out;
}

/* The value of property `at` for `ex`: a new reference, Py_None for NOT_FOUND; NULL
 * without an error when Python must answer, with one on failure. */
static PyObject *
value_of(PhaseVm *vm, PyObject *ex, int at)
{
    PyObject *field, *out;
    int truth;

    if (at == GEO_COUNTRY) /* with a lookup configured, Python asks it */
        return vm->geo == NULL || vm->geo == Py_None ? Py_NewRef(Py_None) : NULL;
    field = native_ex_get(ex, at == PEER_TRUSTED ? EX_TRUSTED_PEER : EX_CLIENT);
    if (field == NULL) {
        PyErr_Clear(); /* no such field: Python raises it again, as before */
        return NULL;
    }
    if (at == PEER_TRUSTED) {
        truth = PyObject_IsTrue(field);
        out = truth < 0 ? NULL
                        : PyBytes_FromStringAndSize(truth ? "\x01" : "\x00", 1);
    } else {
        out = source_address(field);
    }
    Py_DECREF(field);
    return out;
}

int
native_fast_property(PhaseVm *vm, GuestMemory *m, PyObject *alloc, PyObject *path,
                     uint64_t ptr_ptr, uint64_t size_ptr, int *status)
{
    PyObject *state, *ex, *props, *value;
    int at;

    if (vm == NULL || alloc == NULL || (at = which(path)) < 0)
        return 0;
    state = vm->current;
    if (state == NULL || !PyObject_TypeCheck(state, &PhaseState_Type))
        return 0; /* a root context's call, or something Python put there */
    ex = ((PhaseState *)state)->ex;
    if (ex == NULL || ex == Py_None)
        return 0;
    Py_INCREF(ex);
    /* A property a filter set (proxy_set_property) is answered first: Python's. */
    props = native_ex_get(ex, EX_PROPERTIES);
    if (props == NULL || !PyDict_CheckExact(props) || PyDict_GET_SIZE(props) > 0) {
        Py_XDECREF(props);
        Py_DECREF(ex);
        PyErr_Clear(); /* no such field: Python raises it again, as before */
        return 0;
    }
    Py_DECREF(props);
    value = value_of(vm, ex, at);
    Py_DECREF(ex);
    return answer_found(m, alloc, value, ptr_ptr, size_ptr, status);
}
