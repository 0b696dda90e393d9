/* edgegw.wasm._native, host.c: Host, the env of a raw host function.
 *
 * Each hostcall a module imports is registered with wasmtime_linker_define_func_unchecked
 * (fastcall.define_host_func), its env a Host built from its entry in wasm/exports.py:
 * which parameters are i64, which arrive signed, which (pointer, length) pairs are guest
 * strings read into bytes (the first one maybe a header name, lowercased). The callback
 * converts the raw values once and calls the Python implementation; the header-map
 * hostcalls' common case (headers.c), the properties filters read per request
 * (property.c) and the clock are answered here without it.
 *
 * Host callbacks take the GIL with PyGILState_Ensure (a no-op when it is held), because
 * wasmtime-py's public API (instantiate, which runs the start function) calls guest code
 * with the GIL released. A Python exception becomes a trap in the guest: it never
 * unwinds into wasmtime.
 */
#include "native.h"

#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *impl; /* impl(*args) -> int: ints, and bytes for the guest strings */
    PyObject *name;
    Py_ssize_t nparams;
    int has_result;
    unsigned char is64[MAX_VALS];
    /* Params the ABI declares signed (proxy_increment_metric's offset): impl gets the
     * two's-complement value, -1 and not 2**64 - 1. */
    unsigned char is_signed[MAX_VALS];
    /* Params i and i+1 are a guest string's pointer and length: impl gets its bytes. */
    unsigned char is_string[MAX_VALS];
    int has_strings;
    int lower_first; /* the first string is a header name: ASCII-lowercase it */
    GuestMemory memory; /* once instantiated (set_memory) */
    PyObject *mem_owner; /* keeps the memory's Store (memory.ctx) alive */
    PhaseVm *vm; /* set_fast_edit: the filter VM whose current stream C reads */
    int edit;    /* EDIT_*, with vm */
    PyObject *alloc;  /* EDIT_GET: the guest's allocator (a Func), for the answer */
    int clock;        /* set_clock: proxy_get_current_time_nanoseconds in C */
} HostObject;

static void *
host_trap(HostObject *host)
{
    /* The Python exception becomes a trap in the guest: it must never unwind into C. */
    PyObject *type, *value, *tb, *message;
    const char *text = NULL;
    Py_ssize_t len = 0;
    void *trap;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    message = PyUnicode_FromFormat("host function %U failed: %s: %S", host->name,
                                   value ? Py_TYPE(value)->tp_name : "?", value ? value : Py_None);
    if (message != NULL)
        text = PyUnicode_AsUTF8AndSize(message, &len);
    if (text == NULL) {
        PyErr_Clear();
        text = "host function failed";
        len = (Py_ssize_t)strlen(text);
    }
    trap = native_trap_new(text, (size_t)len);
    Py_XDECREF(message);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return trap;
}

/* A guest string as bytes; NULL with *status set (no exception) when it is out of
 * bounds, as proxy-wasm hosts check memory before anything else. */
static PyObject *
guest_bytes(HostObject *host, uint64_t ptr, uint64_t len, int lower, int *status)
{
    uint8_t *base = guest_span(&host->memory, ptr, len);
    PyObject *bytes;

    if (base == NULL) {
        *status = STATUS_INVALID_MEMORY_ACCESS;
        return NULL;
    }
    ptr = 0; /* base already points at it */
    len &= 0xFFFFFFFFu;
    if (!lower)
        return PyBytes_FromStringAndSize((const char *)base + ptr, (Py_ssize_t)len);
    /* Lowercase into a new object: given the data, CPython would hand back its shared
     * one-byte objects, which must never be written. */
    bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (bytes != NULL && len > 0) {
        const uint8_t *from = base + ptr;
        char *text = PyBytes_AS_STRING(bytes);
        for (uint64_t i = 0; i < len; i++)
            text[i] = (char)(from[i] >= 'A' && from[i] <= 'Z' ? from[i] + ('a' - 'A') : from[i]);
    }
    return bytes;
}

void *
native_host_callback(void *env, void *caller, RawVal *vals, size_t n)
{
    HostObject *host = (HostObject *)env;
    PyObject *argv[MAX_VALS + 1];
    PyObject *result = NULL;
    Py_ssize_t made = 0, param = 0;
    int status = -1, lower = host->lower_first;
    void *trap = NULL;
    PyGILState_STATE gil = PyGILState_Ensure();

    (void)caller;
    (void)n;
    native_host_calls++;
    if (host->clock && host->memory.mem != NULL) { /* (ptr) -> status */
        uint8_t *to = guest_span(&host->memory, vals[0].lo, 8);
        struct timespec now;
        uint64_t ns;

        if (to != NULL && clock_gettime(CLOCK_REALTIME, &now) == 0) { /* time.time_ns() */
            ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
            for (int i = 0; i < 8; i++)
                to[i] = (uint8_t)(ns >> (8 * i));
        }
        vals[0].lo = to != NULL ? 0 : STATUS_INVALID_MEMORY_ACCESS;
        vals[0].hi = 0;
        PyGILState_Release(gil);
        return NULL;
    }
    if (host->edit >= EDIT_CALL_BODY) { /* callout.c; before any argument is made */
        int answered = native_fast_callout(host->vm, &host->memory, host->alloc, host->edit,
                                           vals, &status);
        if (answered != 0) {
            vals[0].lo = answered > 0 ? (uint32_t)status : 0;
            vals[0].hi = 0;
            goto done;
        }
    }
    if (host->has_strings && host->memory.mem == NULL)
        /* Called before instantiation finished (a start function): no stream exists, so
         * a header map is not found either. */
        status = STATUS_NOT_FOUND;
    argv[0] = NULL; /* PY_VECTORCALL_ARGUMENTS_OFFSET lets the callee use this slot */
    while (status < 0 && param < host->nparams) {
        uint64_t v = vals[param].lo;
        PyObject *arg;
        if (host->is_string[param]) {
            arg = guest_bytes(host, v, vals[param + 1].lo, lower, &status);
            lower = 0;
            param += 2;
            if (arg == NULL && status >= 0)
                break; /* out of bounds: answered without calling impl */
        } else {
            if (host->is_signed[param])
                arg = host->is64[param] ? PyLong_FromLongLong((long long)v)
                                        : PyLong_FromLong((int32_t)(uint32_t)v);
            else
                arg = host->is64[param] ? PyLong_FromUnsignedLongLong(v)
                                        : PyLong_FromUnsignedLong((uint32_t)v);
            param++;
        }
        if (arg == NULL)
            goto done;
        argv[++made] = arg;
    }
    if (status >= 0) {
        vals[0].lo = (uint32_t)status;
        vals[0].hi = 0;
        goto done;
    }
    if (host->edit == EDIT_GET) { /* (map, key, ptr_ptr, size_ptr) */
        int answered = native_fast_get(host->vm, &host->memory, host->alloc,
                                       vals[0].lo & 0xFFFFFFFFu, argv[2], vals[3].lo,
                                       vals[4].lo, &status);
        if (answered != 0) {
            vals[0].lo = answered > 0 ? (uint32_t)status : 0;
            vals[0].hi = 0;
            goto done;
        }
    } else if (host->edit == EDIT_PROPERTY) { /* (path, ptr_ptr, size_ptr) */
        int answered = native_fast_property(host->vm, &host->memory, host->alloc, argv[1],
                                            vals[2].lo, vals[3].lo, &status);
        if (answered != 0) {
            vals[0].lo = answered > 0 ? (uint32_t)status : 0;
            vals[0].hi = 0;
            goto done;
        }
    } else if (host->edit != 0) { /* made: 3 (map, key, value) or 2 (remove) */
        int edited = native_fast_edit(host->vm, host->edit, vals[0].lo & 0xFFFFFFFFu, argv[2],
                                      made == 3 ? argv[3] : NULL);
        if (edited != 0) {
            vals[0].lo = 0; /* OK */
            vals[0].hi = 0;
            goto done;
        }
    }
    result = PyObject_Vectorcall(host->impl, argv + 1,
                                 (size_t)made | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (result != NULL && host->has_result) {
        unsigned long v = PyLong_AsUnsignedLongMask(result);
        if (!(v == (unsigned long)-1 && PyErr_Occurred())) {
            vals[0].lo = (uint32_t)v;
            vals[0].hi = 0;
        }
    }
done:
    for (Py_ssize_t i = 1; i <= made; i++)
        Py_DECREF(argv[i]);
    Py_XDECREF(result);
    if (PyErr_Occurred())
        trap = host_trap(host);
    PyGILState_Release(gil);
    return trap;
}

/* Mark the parameters at the positions in `positions` (a sequence of ints) as signed
 * (strings = 0) or as the first of a (pointer, length) string pair (strings = 1), each
 * position checked against the signature once, here: -1 with ValueError otherwise. */
static int
mark_params(HostObject *self, PyObject *positions, int strings)
{
    PyObject *seq = PySequence_Fast(positions, strings ? "strings must be a sequence of "
                                                         "parameter indexes"
                                                       : "signed must be a sequence of "
                                                         "parameter indexes");
    int rc = seq == NULL ? -1 : 0;

    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(seq); i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));
        /* A string takes two unsigned i32 params, and a status must come back for bad
         * memory; a signed one is any single param. */
        int bad = at < 0 || at + strings >= self->nparams ||
                  (strings && (self->is64[at] || self->is64[at + 1] || self->is_signed[at] ||
                               self->is_signed[at + 1] || !self->has_result));

        if (at == -1 && PyErr_Occurred())
            rc = -1;
        else if (bad) {
            PyErr_Format(PyExc_ValueError, "%U: bad %s parameter %zd", self->name,
                         strings ? "string" : "signed", at);
            rc = -1;
        } else if (strings) {
            self->is_string[at] = 1;
            self->has_strings = 1;
        } else {
            self->is_signed[at] = 1;
        }
    }
    Py_XDECREF(seq);
    return rc;
}

static PyObject *
host_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"impl",    "name",        "is64",   "has_result",
                             "strings", "lower_first", "signed", NULL};
    PyObject *impl, *name, *is64, *seq, *strings = NULL, *signed_ = NULL;
    int has_result, lower_first = 0;
    HostObject *self;

    if (!native_ready())
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OUOp|OpO:Host", kwlist, &impl, &name,
                                     &is64, &has_result, &strings, &lower_first, &signed_))
        return NULL;
    seq = PySequence_Fast(is64, "is64 must be a sequence of bools");
    if (seq == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(seq) > MAX_VALS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%U: too many parameters", name);
        return NULL;
    }
    self = (HostObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->impl = Py_NewRef(impl);
    self->name = Py_NewRef(name);
    self->nparams = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < self->nparams; i++) {
        int truth = PyObject_IsTrue(PySequence_Fast_GET_ITEM(seq, i));
        if (truth < 0) {
            Py_DECREF(seq);
            goto fail;
        }
        self->is64[i] = (unsigned char)truth;
    }
    Py_DECREF(seq);
    self->has_result = has_result;
    self->lower_first = lower_first;
    /* Signed first: a string's two params are unsigned i32. */
    if ((signed_ != NULL && mark_params(self, signed_, 0) < 0) ||
        (strings != NULL && mark_params(self, strings, 1) < 0))
        goto fail;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyObject *
host_set_memory(HostObject *self, PyObject *args)
{
    unsigned long long ctx, mem;
    PyObject *owner;

    if (!PyArg_ParseTuple(args, "KKO:set_memory", &ctx, &mem, &owner))
        return NULL;
    Py_XSETREF(self->mem_owner, Py_NewRef(owner));
    self->memory.ctx = (void *)(uintptr_t)ctx;
    self->memory.mem = (const void *)(uintptr_t)mem;
    self->memory.base = NULL;
    self->memory.size = 0; /* read at the first access */
    Py_RETURN_NONE;
}

static PyObject *
host_set_fast_edit(HostObject *self, PyObject *args)
{
    PyObject *plugin, *alloc = NULL;
    const char *name;
    int edit, ok;

    if (!PyArg_ParseTuple(args, "Os|O:set_fast_edit", &plugin, &name, &alloc))
        return NULL;
    /* The VM is a Vm: C reads its current stream as a field, per call (headers.c). */
    if (!PyObject_TypeCheck(plugin, &PhaseVm_Type)) {
        PyErr_Format(PyExc_TypeError, "%U: set_fast_edit() takes a filter VM (a Vm)",
                     self->name);
        return NULL;
    }
    edit = strcmp(name, "add") == 0       ? EDIT_ADD
           : strcmp(name, "replace") == 0 ? EDIT_REPLACE
           : strcmp(name, "remove") == 0  ? EDIT_REMOVE
           : strcmp(name, "get") == 0     ? EDIT_GET
           : strcmp(name, "property") == 0 ? EDIT_PROPERTY
           : strcmp(name, "call_body") == 0 ? EDIT_CALL_BODY
           : strcmp(name, "effective") == 0 ? EDIT_EFFECTIVE
           : strcmp(name, "continue") == 0  ? EDIT_CONTINUE
                                          : 0;
    /* The shapes of proxy_{add,replace}_header_map_value(map, key, value),
     * proxy_remove_header_map_value(map, key) and proxy_get_header_map_value(map, key,
     * ptr_ptr, size_ptr), their strings read by this Host; get needs the allocator. */
    if (edit == EDIT_REMOVE)
        ok = self->nparams == 3 && self->is_string[1];
    else if (edit == EDIT_GET)
        ok = self->nparams == 5 && self->is_string[1] && !self->is_string[3] &&
             alloc != NULL && PyCallable_Check(alloc);
    else if (edit == EDIT_PROPERTY) /* proxy_get_property(path, ptr_ptr, size_ptr) */
        ok = self->nparams == 4 && self->is_string[0] && !self->is_string[2] &&
             alloc != NULL && PyCallable_Check(alloc);
    else if (edit == EDIT_CALL_BODY) /* (buffer, start, max_size, ptr_ptr, size_ptr) */
        ok = self->nparams == 5 && !self->has_strings && self->has_result && alloc != NULL &&
             PyCallable_Check(alloc);
    else if (edit == EDIT_EFFECTIVE || edit == EDIT_CONTINUE) /* (context) / (stream) */
        ok = self->nparams == 1 && !self->has_strings && self->has_result && !self->is64[0];
    else
        ok = edit != 0 && self->nparams == 5 && self->is_string[1] && self->is_string[3];
    if (!ok) { /* this Host stays as it was */
        PyErr_Format(PyExc_ValueError, "%U cannot be a '%s' header hostcall", self->name, name);
        return NULL;
    }
    self->edit = edit;
    Py_XSETREF(self->vm, (PhaseVm *)Py_NewRef(plugin));
    Py_XSETREF(self->alloc,
               edit == EDIT_GET || edit == EDIT_PROPERTY || edit == EDIT_CALL_BODY
                   ? Py_NewRef(alloc)
                   : NULL);
    Py_RETURN_NONE;
}

static PyObject *
host_set_clock(HostObject *self, PyObject *unused)
{
    (void)unused;
    if (self->nparams != 1 || !self->has_result || self->has_strings || self->is64[0]) {
        PyErr_Format(PyExc_ValueError, "%U cannot be proxy_get_current_time_nanoseconds",
                     self->name);
        return NULL;
    }
    self->clock = 1;
    Py_RETURN_NONE;
}

static PyObject *
host_address(HostObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromVoidPtr(self);
}

static int
host_traverse(HostObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->impl);
    Py_VISIT(self->mem_owner);
    Py_VISIT(self->vm);
    Py_VISIT(self->alloc);
    return 0;
}

static int
host_clear(HostObject *self)
{
    Py_CLEAR(self->impl);
    Py_CLEAR(self->mem_owner);
    Py_CLEAR(self->vm);
    Py_CLEAR(self->alloc);
    return 0;
}

static void
host_dealloc(HostObject *self)
{
    PyObject_GC_UnTrack(self);
    host_clear(self);
    Py_CLEAR(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef host_methods[] = {
    {"set_memory", (PyCFunction)host_set_memory, METH_VARARGS,
     "set_memory(ctx, memory_ptr, owner): the guest memory strings are read from"},
    {"set_clock", (PyCFunction)host_set_clock, METH_NOARGS,
     "set_clock(): this Host is proxy_get_current_time_nanoseconds(ptr), answered in C "
     "(CLOCK_REALTIME, as time.time_ns()) once it has memory; before that, impl."},
    {"set_fast_edit", (PyCFunction)host_set_fast_edit, METH_VARARGS,
     "set_fast_edit(plugin, 'add' | 'replace' | 'remove' | 'get' | 'call_body' | "
     "'effective' | 'continue', alloc=None): this Host is that hostcall; for the first four "
     "(header maps) an ordinary header of plugin.current.ex's (plugin: a Vm) "
     "request_headers (map 0) or, once ex.status is set, response_headers (map 2) is "
     "edited or read in C, and get reads their pseudo-headers too (it answers through "
     "alloc, the guest's allocator) and an http_call answer's :status; 'property': this "
     "Host is proxy_get_property, a few paths answered in C (property.c); 'call_body' "
     "(get_buffer_bytes of that answer's body, through alloc), 'effective' "
     "(set_effective_context) and 'continue' (continue_stream) are callout.c's; "
     "anything else goes to impl."},
    {NULL},
};

static PyGetSetDef host_getset[] = {
    {"address", (getter)host_address, NULL, "the env pointer to register", NULL},
    {NULL},
};

static PyTypeObject HostType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._native.Host",
    .tp_doc = "The env of a raw host function: calls impl(*args) -> int.",
    .tp_basicsize = sizeof(HostObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = host_new,
    .tp_dealloc = (destructor)host_dealloc,
    .tp_traverse = (traverseproc)host_traverse,
    .tp_clear = (inquiry)host_clear,
    .tp_getset = host_getset,
    .tp_methods = host_methods,
};

int
native_host_add(PyObject *module)
{
    if (PyType_Ready(&HostType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "Host", (PyObject *)&HostType);
}
