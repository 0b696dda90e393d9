/* edgegw.wasm._native, exchange.c: where C finds the fields of an Exchange.
 *
 * The header-map hostcalls (headers.c), a header phase (phase_chain.c) and the Starter
 * read a few fields of the request's edgegw.chain.Exchange on every request. Exchange is
 * a slots dataclass, so each field is a T_OBJECT_EX slot at a fixed offset:
 * set_exchange(Exchange) reads those offsets once from the class's member descriptors,
 * and an object of exactly that class is then read as a struct, with no attribute lookup
 * (name hashing, MRO walk, descriptor call) per read. Any other object (a subclass, a
 * test's stand-in, or every object before set_exchange) is read by attribute name, as it
 * was before: the layout is an optimisation, never a second set of rules.
 */
#include "native.h"

static const char *const names[EX_FIELDS] = {
    [EX_ROUTE] = "route",
    [EX_METHOD] = "method",
    [EX_PATH] = "path",
    [EX_SCHEME] = "scheme",
    [EX_AUTHORITY] = "authority",
    [EX_REQUEST_HEADERS] = "request_headers",
    [EX_RESPONSE_HEADERS] = "response_headers",
    [EX_STATUS] = "status",
    [EX_CLIENT] = "client",
    [EX_TRUSTED_PEER] = "trusted_peer",
    [EX_PROPERTIES] = "properties",
};

static PyObject *interned[EX_FIELDS];
static PyTypeObject *layout_type; /* the Exchange class the offsets are of */
static Py_ssize_t offsets[EX_FIELDS];

PyObject *
native_ex_get(PyObject *ex, ExField field)
{
    if (Py_TYPE(ex) == layout_type) {
        PyObject *value = *(PyObject **)((char *)ex + offsets[field]);
        if (value != NULL)
            return Py_NewRef(value);
        /* unset: the attribute lookup raises the AttributeError Python would */
    }
    return PyObject_GetAttr(ex, interned[field]);
}

/* set_exchange(cls): cls's slot offsets of the fields above. Each must be a plain object
 * slot (a member descriptor of cls itself, T_OBJECT_EX); otherwise TypeError, and objects
 * keep being read by attribute. */
static PyObject *
set_exchange(PyObject *module, PyObject *cls)
{
    Py_ssize_t found[EX_FIELDS];

    (void)module;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "set_exchange() takes the Exchange class");
        return NULL;
    }
    for (int i = 0; i < EX_FIELDS; i++) {
        PyObject *descr = PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, interned[i]);
        PyMemberDef *member;

        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            (member = ((PyMemberDescrObject *)descr)->d_member)->type != T_OBJECT_EX ||
            (member->flags & READONLY)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "set_exchange(): %s is not a slot of %R",
                             names[i], cls);
            return NULL;
        }
        found[i] = member->offset;
    }
    memcpy(offsets, found, sizeof(offsets));
    Py_XSETREF(layout_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_exchange", set_exchange, METH_O,
     "set_exchange(Exchange): read Exchange objects' fields by slot offset (exchange.c)."},
    {NULL, NULL, 0, NULL},
};

int
native_exchange_add(PyObject *module)
{
    for (int i = 0; i < EX_FIELDS; i++) {
        if (interned[i] == NULL && (interned[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return -1;
    }
    return PyModule_AddFunctions(module, methods);
}
