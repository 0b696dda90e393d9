/* edgegw.wasm._fastcall: the per-request crossings between Python and wasm, in C.
 *
 * Through ctypes, a guest call and a hostcall were almost all ctypes argument conversion
 * and libffi (perf: wasmtime itself was ~1% of the samples; docs/benchmarks.md has the
 * figures). This module makes the same raw wasmtime C-API calls from C:
 *
 *   Func      a guest export, called like a Python function with i32/i64 arguments;
 *             wasmtime_func_call_unchecked under the epoch deadline, which the
 *             outermost guest call of a store sets (limits.cpu bounds a callback).
 *   Host      the env of a host function registered with
 *             wasmtime_linker_define_func_unchecked; host_callback() calls its Python impl,
 *             after reading the (pointer, length) arguments that name guest strings into
 *             bytes when the Host is told which they are (header maps, properties,
 *             shared data); the header-map hostcalls' common case is made here whole.
 *   Answer    how a Python hostcall answers bytes: through the guest's allocator into
 *             its memory, the address and size written where the guest asked.
 *   start_ticker  a native thread that increments the engine's epoch (limits.cpu).
 *
 * It links against nothing: fastcall.py hands over the addresses of the wasmtime
 * functions (wasmtime-py's ctypes library) through init(), so the pinned wasmtime wheel
 * stays the only copy of wasmtime in the process.
 *
 * The GIL is held during guest calls. That is why the epoch ticker is a native thread:
 * a Python ticker would need the GIL that an endless guest loop never gives back.
 * Host callbacks still take the GIL with PyGILState_Ensure (a no-op when it is held),
 * because wasmtime-py's public API (instantiate, which runs the start function) calls
 * guest code with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* wasmtime_val_raw_t: a 16-byte union; an i32 or i64 lives in the low word. */
typedef struct {
    uint64_t lo, hi;
} RawVal;

#define MAX_VALS 24 /* the widest proxy-wasm import (grpc_call) has 11 params */

typedef void *(*CallUncheckedFn)(void *ctx, const void *func, RawVal *vals, size_t n,
                                 void **trap);
typedef void (*SetDeadlineFn)(void *ctx, uint64_t ticks);
typedef void *(*TrapNewFn)(const char *msg, size_t len);
typedef bool (*TrapCodeFn)(const void *trap, uint8_t *code);
typedef void (*IncrementEpochFn)(const void *engine);
typedef uint8_t *(*MemoryDataFn)(void *ctx, const void *memory);
typedef size_t (*MemorySizeFn)(void *ctx, const void *memory);

/* proxy-wasm v0.2.1 WasmResult values the callback answers by itself. */
#define STATUS_NOT_FOUND 1
#define STATUS_INVALID_MEMORY_ACCESS 6

static CallUncheckedFn call_unchecked;
static SetDeadlineFn set_epoch_deadline;
static TrapNewFn trap_new;
static TrapCodeFn trap_code;
static uint8_t interrupt_code; /* WASMTIME_TRAP_CODE_INTERRUPT: the epoch deadline */
static IncrementEpochFn increment_epoch;
static MemoryDataFn memory_data;
static MemorySizeFn memory_size;

static unsigned long long guest_calls, host_calls;

static int
ready(void)
{
    if (call_unchecked == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastcall.init() was not called");
        return 0;
    }
    return 1;
}

/* ---- guest exports --------------------------------------------------------------- */

/* The guest calls in progress on this thread, innermost first (each lives on its
 * func_vectorcall's C stack). A guest call can nest inside another: a hostcall that
 * answers bytes calls the guest's allocator. */
typedef struct Running {
    const void *ctx;
    const struct Running *outer;
} Running;

static _Thread_local const Running *running;
/* Guest calls this thread saw end at the CPU deadline: an outer call that then fails
 * with its hostcall's trap (no trap code) failed because of that deadline too. */
static _Thread_local unsigned long long interrupted;

static int
store_running(const void *ctx)
{
    for (const Running *r = running; r != NULL; r = r->outer)
        if (r->ctx == ctx)
            return 1;
    return 0;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    void *ctx;          /* wasmtime_context_t* of the store */
    const void *func;   /* wasmtime_func_t*, inside `owner` */
    PyObject *owner;    /* keeps alive the Store (ctx) and the struct holding `func` */
    PyObject *name;
    PyObject *on_error; /* on_error(name, deadline, error_ptr, trap_ptr): raises */
    unsigned long long ticks;
    Py_ssize_t nparams;
    Py_ssize_t nresults;
    size_t count; /* max(nparams, nresults, 1): the length wasmtime expects */
} FuncObject;

static PyObject *
func_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FuncObject *self = (FuncObject *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    RawVal vals[MAX_VALS];
    void *trap = NULL;
    void *err;
    Running me = {self->ctx, running};
    unsigned long long interrupted_before = interrupted;
    int deadline;
    uint8_t code;

    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_Format(PyExc_TypeError, "%U takes no keyword arguments", self->name);
        return NULL;
    }
    if (nargs != self->nparams) {
        PyErr_Format(PyExc_TypeError, "%U takes %zd arguments (%zd given)", self->name,
                     self->nparams, nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        /* The mask keeps wasm's two's-complement view of negative Python ints. */
        unsigned long long v = PyLong_AsUnsignedLongLongMask(args[i]);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        vals[i].lo = v;
        vals[i].hi = 0;
    }
    guest_calls++;
    /* The deadline is "current epoch + ticks": set per callback, so each one gets the
     * whole of limits.cpu however long ago the previous one ran. Only by the outermost
     * call into this store: a nested one (the allocator a bytes-answering hostcall
     * calls) setting it again would hand a guest looping on such a hostcall a fresh
     * limits.cpu at every iteration. */
    if (!store_running(self->ctx))
        set_epoch_deadline(self->ctx, self->ticks);
    running = &me;
    err = call_unchecked(self->ctx, self->func, vals, self->count, &trap);
    running = me.outer;
    if (err != NULL || trap != NULL) {
        /* Classified by wasmtime's trap code, never by its message (which quotes guest
         * function names). A failure without a code is a hostcall's trap (host_trap,
         * which wasmtime hands back as an error): it is the deadline when a guest call
         * nested in that hostcall was interrupted. */
        if (trap != NULL && trap_code(trap, &code))
            deadline = code == interrupt_code;
        else
            deadline = interrupted != interrupted_before;
        if (deadline)
            interrupted++;
        return PyObject_CallFunction(self->on_error, "OOKK", self->name,
                                     deadline ? Py_True : Py_False,
                                     (unsigned long long)(uintptr_t)err,
                                     (unsigned long long)(uintptr_t)trap);
    }
    if (self->nresults == 0)
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong((uint32_t)vals[0].lo);
}

static PyObject *
func_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ctx",     "func_ptr", "owner", "nparams", "nresults",
                             "ticks",   "name",     "on_error", NULL};
    unsigned long long ctx, func_ptr, ticks;
    Py_ssize_t nparams, nresults;
    PyObject *owner, *name, *on_error;
    FuncObject *self;

    if (!ready())
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKOnnKUO:Func", kwlist, &ctx, &func_ptr,
                                     &owner, &nparams, &nresults, &ticks, &name, &on_error))
        return NULL;
    if (nparams < 0 || nresults < 0 || nparams > MAX_VALS || nresults > MAX_VALS) {
        PyErr_Format(PyExc_ValueError, "%U: unsupported signature", name);
        return NULL;
    }
    self = (FuncObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = func_vectorcall;
    self->ctx = (void *)(uintptr_t)ctx;
    self->func = (const void *)(uintptr_t)func_ptr;
    self->owner = Py_NewRef(owner);
    self->name = Py_NewRef(name);
    self->on_error = Py_NewRef(on_error);
    self->ticks = ticks;
    self->nparams = nparams;
    self->nresults = nresults;
    self->count = (size_t)(nparams > nresults ? nparams : nresults);
    if (self->count == 0)
        self->count = 1;
    return (PyObject *)self;
}

static int
func_traverse(FuncObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->on_error);
    return 0;
}

static int
func_clear(FuncObject *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->on_error);
    return 0;
}

static void
func_dealloc(FuncObject *self)
{
    PyObject_GC_UnTrack(self);
    func_clear(self);
    Py_CLEAR(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef func_members[] = {
    {"ticks", T_ULONGLONG, offsetof(FuncObject, ticks), 0,
     "CPU deadline of one call, in epoch ticks"},
    {"name", T_OBJECT, offsetof(FuncObject, name), READONLY, "the export's name"},
    {NULL},
};

static PyTypeObject FuncType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._fastcall.Func",
    .tp_doc = "A guest export called with i32/i64 arguments; returns its first i32 result.",
    .tp_basicsize = sizeof(FuncObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = func_new,
    .tp_dealloc = (destructor)func_dealloc,
    .tp_traverse = (traverseproc)func_traverse,
    .tp_clear = (inquiry)func_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(FuncObject, vectorcall),
    .tp_members = func_members,
};

/* ---- guest memory ---------------------------------------------------------------- */

/* A guest's linear memory, once instantiated. The base never moves (memory_may_move is
 * off) and the size only grows: a cached size is never too large. */
typedef struct {
    void *ctx;
    const void *mem;
    uint8_t *base;
    size_t size;
} GuestMemory;

/* Guest memory [ptr, ptr + len) as a C pointer; NULL when out of bounds. */
static uint8_t *
guest_span(GuestMemory *m, uint64_t ptr, uint64_t len)
{
    ptr &= 0xFFFFFFFFu;
    len &= 0xFFFFFFFFu;
    if (ptr + len > m->size) { /* grown since, or really out of bounds */
        m->base = memory_data(m->ctx, m->mem);
        m->size = memory_size(m->ctx, m->mem);
        if (ptr + len > m->size)
            return NULL;
    }
    return m->base + ptr;
}

/* Write a little-endian u32 (wasm's byte order) at guest address ptr; 0: out of bounds. */
static int
guest_put_u32(GuestMemory *m, uint64_t ptr, uint32_t value)
{
    uint8_t *to = guest_span(m, ptr, 4);

    if (to == NULL)
        return 0;
    for (int i = 0; i < 4; i++)
        to[i] = (uint8_t)(value >> (8 * i));
    return 1;
}

/* Answer bytes value to the guest as proxy-wasm hostcalls do: copied into memory from
 * the guest's allocator alloc (none for b""), its address and size written at ptr_ptr
 * and size_ptr. *status: OK or INVALID_MEMORY_ACCESS; -1: an error is set (the allocator
 * trapped). */
static int
put_answer(GuestMemory *m, PyObject *alloc, PyObject *value, uint64_t ptr_ptr,
           uint64_t size_ptr, int *status)
{
    Py_ssize_t len = PyBytes_GET_SIZE(value);
    uint64_t addr = 0;

    *status = 0; /* OK */
    if (len > 0) { /* the allocator is guest code: it may grow (not move) memory */
        uint8_t *to;
        PyObject *size = PyLong_FromSsize_t(len);
        PyObject *addr_obj = size == NULL ? NULL : PyObject_CallOneArg(alloc, size);
        Py_XDECREF(size);
        if (addr_obj == NULL)
            return -1;
        addr = PyLong_AsUnsignedLongLongMask(addr_obj) & 0xFFFFFFFFu;
        Py_DECREF(addr_obj);
        to = addr == 0 ? NULL : guest_span(m, addr, (uint64_t)len);
        if (to == NULL) {
            *status = STATUS_INVALID_MEMORY_ACCESS;
            return 0;
        }
        memcpy(to, PyBytes_AS_STRING(value), (size_t)len);
    }
    if (!guest_put_u32(m, ptr_ptr, (uint32_t)addr) ||
        !guest_put_u32(m, size_ptr, (uint32_t)len))
        *status = STATUS_INVALID_MEMORY_ACCESS;
    return 0;
}

/* ---- host functions -------------------------------------------------------------- */

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
    PyObject *plugin; /* set_fast_edit: a header-map hostcall's common case in C */
    int edit;         /* EDIT_*, with plugin */
    PyObject *alloc;  /* EDIT_GET: the guest's allocator (a Func), for the answer */
    int clock;        /* set_clock: proxy_get_current_time_nanoseconds in C */
} HostObject;

enum { EDIT_ADD = 1, EDIT_REPLACE, EDIT_REMOVE, EDIT_GET };

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
    trap = trap_new(text, (size_t)len);
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

static PyObject *str_current, *str_ex, *str_status, *str_request_headers,
    *str_response_headers;

/* The stream's own exchange, plugin.current.ex, when map is its request headers (0) or,
 * once ex.status is set, its response headers (2); NULL without an error when there is
 * none (no stream, no response yet, another map). */
static PyObject *
stream_exchange(HostObject *host, uint64_t map)
{
    PyObject *state, *ex;

    if (map != 0 && map != 2)
        return NULL;
    state = PyObject_GetAttr(host->plugin, str_current);
    if (state == NULL)
        return NULL;
    ex = state == Py_None ? NULL : PyObject_GetAttr(state, str_ex);
    Py_DECREF(state);
    if (ex == NULL)
        return NULL;
    if (map == 2) { /* no response yet: the map does not exist (impl answers NOT_FOUND) */
        PyObject *status = PyObject_GetAttr(ex, str_status);
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
stream_headers(HostObject *host, uint64_t map)
{
    PyObject *ex = stream_exchange(host, map), *headers;

    if (ex == NULL)
        return NULL;
    headers = PyObject_GetAttr(ex, map == 0 ? str_request_headers : str_response_headers);
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
pseudo_value(HostObject *host, uint64_t map, PyObject *key)
{
    static const char *request[] = {":authority", ":path", ":method", ":scheme"};
    const char *name = PyBytes_AS_STRING(key);
    size_t len = (size_t)PyBytes_GET_SIZE(key);
    PyObject *ex = stream_exchange(host, map), *field = NULL, *value;

    if (ex == NULL)
        return NULL;
    /* Compared with their lengths, as Python compares bytes: the guest's key may hold
     * a NUL (":status\0junk" is no pseudo-header, for the Python path either). */
    if (map == 2 && len == strlen(":status") && memcmp(name, ":status", len) == 0) {
        PyObject *status = PyObject_GetAttr(ex, str_status);
        field = status == NULL ? NULL : PyObject_Str(status);
        Py_XDECREF(status);
    }
    for (size_t i = 0; map == 0 && i < sizeof(request) / sizeof(request[0]); i++) {
        if (len == strlen(request[i]) && memcmp(name, request[i], len) == 0) {
            /* the field is the name without its colon */
            field = PyObject_GetAttrString(ex, request[i] + 1);
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
static int
fast_edit(HostObject *host, uint64_t map, PyObject *key, PyObject *value)
{
    PyObject *headers, *kept = NULL, *pair = NULL;
    Py_ssize_t at;
    int done = 0;

    if (host->edit == 0 || (host->edit != EDIT_REMOVE) != (value != NULL))
        return 0; /* not a shape set_fast_edit accepted */
    if (PyBytes_GET_SIZE(key) == 0 || PyBytes_AS_STRING(key)[0] == ':')
        return 0; /* pseudo-headers live in the Exchange's fields */
    if (value != NULL && !field_ok(key, value))
        return 0; /* the Python method raises InvalidHeader */
    headers = stream_headers(host, map);
    if (headers == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (host->edit != EDIT_REMOVE && (pair = PyTuple_Pack(2, key, value)) == NULL)
        done = -1;
    else if (host->edit == EDIT_ADD)
        done = PyList_Append(headers, pair) < 0 ? -1 : 1;
    else if ((kept = without(headers, key, &at)) == NULL)
        done = PyErr_Occurred() ? -1 : 0;
    else if (host->edit == EDIT_REPLACE &&
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
header_value(HostObject *host, uint64_t map, PyObject *key)
{
    PyObject *headers = stream_headers(host, map), *value = Py_None;

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
static int
fast_get(HostObject *host, uint64_t map, PyObject *key, uint64_t ptr_ptr, uint64_t size_ptr,
         int *status)
{
    PyObject *value;
    int rc;

    if (host->alloc == NULL || PyBytes_GET_SIZE(key) == 0)
        return 0;
    value = PyBytes_AS_STRING(key)[0] == ':' ? pseudo_value(host, map, key)
                                             : header_value(host, map, key);
    if (value == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (value == Py_None) {
        Py_DECREF(value);
        *status = STATUS_NOT_FOUND;
        return 1;
    }
    rc = put_answer(&host->memory, host->alloc, value, ptr_ptr, size_ptr, status);
    Py_DECREF(value);
    return rc < 0 ? -1 : 1;
}

static void *
host_callback(void *env, void *caller, RawVal *vals, size_t n)
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
    host_calls++;
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
        int answered = fast_get(host, vals[0].lo & 0xFFFFFFFFu, argv[2], vals[3].lo,
                                vals[4].lo, &status);
        if (answered != 0) {
            vals[0].lo = answered > 0 ? (uint32_t)status : 0;
            vals[0].hi = 0;
            goto done;
        }
    } else if (host->edit != 0) { /* made: 3 (map, key, value) or 2 (remove) */
        int edited = fast_edit(host, vals[0].lo & 0xFFFFFFFFu, argv[2], made == 3 ? argv[3] : NULL);
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

static PyObject *
host_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"impl",    "name",        "is64",   "has_result",
                             "strings", "lower_first", "signed", NULL};
    PyObject *impl, *name, *is64, *seq, *strings = NULL, *starts = NULL, *signed_ = NULL;
    int has_result, lower_first = 0;
    HostObject *self;

    if (!ready())
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
    if (signed_ != NULL) {
        starts = PySequence_Fast(signed_, "signed must be a sequence of parameter indexes");
        if (starts == NULL)
            goto fail;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(starts); i++) {
            Py_ssize_t at = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(starts, i));
            if (at == -1 && PyErr_Occurred())
                goto fail;
            if (at < 0 || at >= self->nparams) {
                PyErr_Format(PyExc_ValueError, "%U: bad signed parameter %zd", name, at);
                goto fail;
            }
            self->is_signed[at] = 1;
        }
        Py_CLEAR(starts);
    }
    if (strings != NULL) {
        starts = PySequence_Fast(strings, "strings must be a sequence of parameter indexes");
        if (starts == NULL)
            goto fail;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(starts); i++) {
            Py_ssize_t at = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(starts, i));
            if (at == -1 && PyErr_Occurred())
                goto fail;
            /* A string takes two i32 params; a status must come back for bad memory. */
            if (at < 0 || at + 1 >= self->nparams || self->is64[at] || self->is64[at + 1] ||
                self->is_signed[at] || self->is_signed[at + 1] || !has_result) {
                PyErr_Format(PyExc_ValueError, "%U: bad string parameter %zd", name, at);
                goto fail;
            }
            self->is_string[at] = 1;
            self->has_strings = 1;
        }
        Py_DECREF(starts);
    }
    return (PyObject *)self;
fail:
    Py_XDECREF(starts);
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
    edit = strcmp(name, "add") == 0       ? EDIT_ADD
           : strcmp(name, "replace") == 0 ? EDIT_REPLACE
           : strcmp(name, "remove") == 0  ? EDIT_REMOVE
           : strcmp(name, "get") == 0     ? EDIT_GET
                                          : 0;
    /* The shapes of proxy_{add,replace}_header_map_value(map, key, value),
     * proxy_remove_header_map_value(map, key) and proxy_get_header_map_value(map, key,
     * ptr_ptr, size_ptr), their strings read by this Host; get needs the allocator. */
    if (edit == EDIT_REMOVE)
        ok = self->nparams == 3 && self->is_string[1];
    else if (edit == EDIT_GET)
        ok = self->nparams == 5 && self->is_string[1] && !self->is_string[3] &&
             alloc != NULL && PyCallable_Check(alloc);
    else
        ok = edit != 0 && self->nparams == 5 && self->is_string[1] && self->is_string[3];
    if (!ok) { /* this Host stays as it was */
        PyErr_Format(PyExc_ValueError, "%U cannot be a '%s' header hostcall", self->name, name);
        return NULL;
    }
    self->edit = edit;
    Py_XSETREF(self->plugin, Py_NewRef(plugin));
    Py_XSETREF(self->alloc, edit == EDIT_GET ? Py_NewRef(alloc) : NULL);
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
    Py_VISIT(self->plugin);
    Py_VISIT(self->alloc);
    return 0;
}

static int
host_clear(HostObject *self)
{
    Py_CLEAR(self->impl);
    Py_CLEAR(self->mem_owner);
    Py_CLEAR(self->plugin);
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
     "set_fast_edit(plugin, 'add' | 'replace' | 'remove' | 'get', alloc=None): this Host "
     "is that header-map hostcall; an ordinary header of plugin.current.ex's "
     "request_headers (map 0) or, once ex.status is set, response_headers (map 2) is "
     "edited or read in C, and get reads their pseudo-headers too (it answers through "
     "alloc, the guest's allocator); anything else goes to impl."},
    {NULL},
};

static PyGetSetDef host_getset[] = {
    {"address", (getter)host_address, NULL, "the env pointer to register", NULL},
    {NULL},
};

static PyTypeObject HostType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._fastcall.Host",
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

/* ---- answers from Python hostcalls ----------------------------------------------- */

/* Answer(ctx, memory_ptr, owner, alloc)(data, ptr_ptr, size_ptr) -> status: what a
 * Python hostcall returns bytes through (Hostcalls._return_bytes), put_answer in C. */
typedef struct {
    PyObject_HEAD
    GuestMemory memory;
    PyObject *owner; /* keeps the memory's Store (ctx) and wasmtime object alive */
    PyObject *alloc;
    vectorcallfunc vectorcall;
} AnswerObject;

static PyObject *
answer_call(AnswerObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    unsigned long long ptr_ptr, size_ptr;
    int status;

    if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "answer(data: bytes, ptr_ptr, size_ptr)");
        return NULL;
    }
    ptr_ptr = PyLong_AsUnsignedLongLongMask(args[1]);
    size_ptr = PyLong_AsUnsignedLongLongMask(args[2]);
    if (PyErr_Occurred() ||
        put_answer(&self->memory, self->alloc, args[0], ptr_ptr, size_ptr, &status) < 0)
        return NULL;
    return PyLong_FromLong(status);
}

static PyObject *
answer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long ctx, mem;
    PyObject *owner, *alloc;
    AnswerObject *self;

    if (!PyArg_ParseTuple(args, "KKOO:Answer", &ctx, &mem, &owner, &alloc))
        return NULL;
    if (!PyCallable_Check(alloc)) {
        PyErr_SetString(PyExc_TypeError, "Answer(): alloc is the guest's allocator");
        return NULL;
    }
    if ((self = (AnswerObject *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->memory.ctx = (void *)(uintptr_t)ctx;
    self->memory.mem = (const void *)(uintptr_t)mem;
    self->owner = Py_NewRef(owner);
    self->alloc = Py_NewRef(alloc);
    self->vectorcall = (vectorcallfunc)answer_call;
    return (PyObject *)self;
}

static int
answer_traverse(AnswerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->alloc);
    return 0;
}

static int
answer_clear(AnswerObject *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->alloc);
    return 0;
}

static void
answer_dealloc(AnswerObject *self)
{
    PyObject_GC_UnTrack(self);
    answer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject AnswerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._fastcall.Answer",
    .tp_doc = "Answer(ctx, memory_ptr, owner, alloc): called with (data, ptr_ptr, size_ptr), "
              "copies data into guest memory from alloc and writes its address and size "
              "there; returns the proxy-wasm status (OK or INVALID_MEMORY_ACCESS).",
    .tp_basicsize = sizeof(AnswerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = answer_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(AnswerObject, vectorcall),
    .tp_dealloc = (destructor)answer_dealloc,
    .tp_traverse = (traverseproc)answer_traverse,
    .tp_clear = (inquiry)answer_clear,
};

/* ---- the epoch ticker ------------------------------------------------------------ */

static pid_t ticker_pid;
static const void *ticker_engine;
static long ticker_interval_ns;

static void *
ticker_main(void *arg)
{
    struct timespec interval = {ticker_interval_ns / 1000000000L,
                                ticker_interval_ns % 1000000000L};
    (void)arg;
    for (;;) {
        nanosleep(&interval, NULL);
        increment_epoch(ticker_engine);
    }
    return NULL;
}

static PyObject *
start_ticker(PyObject *module, PyObject *args)
{
    unsigned long long engine;
    long interval_ns;
    PyObject *keep;
    pthread_t thread;
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;

    (void)module;
    if (!ready())
        return NULL;
    if (!PyArg_ParseTuple(args, "KOl:start_ticker", &engine, &keep, &interval_ns))
        return NULL;
    /* Threads do not survive fork(): a forked worker starts its own. */
    if (ticker_pid == getpid())
        Py_RETURN_NONE;
    /* The thread uses the engine until the process ends: this reference is never
     * dropped, so interpreter shutdown cannot free the engine under it. */
    Py_INCREF(keep);
    ticker_engine = (const void *)(uintptr_t)engine;
    ticker_interval_ns = interval_ns;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Signals stay with the Python threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&thread, &attr, ticker_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    ticker_pid = getpid();
    Py_RETURN_NONE;
}

/* ---- module ---------------------------------------------------------------------- */

static PyObject *
init(PyObject *module, PyObject *args)
{
    unsigned long long call, deadline, trap, epoch, data, size, code;
    unsigned char interrupt;

    (void)module;
    if (!PyArg_ParseTuple(args, "KKKKKKKb:init", &call, &deadline, &trap, &epoch, &data, &size,
                          &code, &interrupt))
        return NULL;
    trap_code = (TrapCodeFn)(uintptr_t)code;
    interrupt_code = interrupt;
    memory_data = (MemoryDataFn)(uintptr_t)data;
    memory_size = (MemorySizeFn)(uintptr_t)size;
    call_unchecked = (CallUncheckedFn)(uintptr_t)call;
    set_epoch_deadline = (SetDeadlineFn)(uintptr_t)deadline;
    trap_new = (TrapNewFn)(uintptr_t)trap;
    increment_epoch = (IncrementEpochFn)(uintptr_t)epoch;
    return PyLong_FromVoidPtr((void *)host_callback);
}

static PyObject *
set_deadline(PyObject *module, PyObject *args)
{
    unsigned long long ctx, ticks;

    (void)module;
    if (!ready())
        return NULL;
    if (!PyArg_ParseTuple(args, "KK:set_deadline", &ctx, &ticks))
        return NULL;
    set_epoch_deadline((void *)(uintptr_t)ctx, ticks);
    Py_RETURN_NONE;
}

static PyObject *
counts(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return Py_BuildValue("KK", guest_calls, host_calls);
}

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS,
     "init(call_unchecked, set_epoch_deadline, trap_new, increment_epoch, memory_data, "
     "memory_data_size, trap_code, interrupt_code) -> callback address: the wasmtime C "
     "functions, by address, and WASMTIME_TRAP_CODE_INTERRUPT."},
    {"set_deadline", set_deadline, METH_VARARGS, "set_deadline(ctx, ticks)"},
    {"start_ticker", start_ticker, METH_VARARGS,
     "start_ticker(engine_ptr, engine_obj, interval_ns): once per process."},
    {"counts", counts, METH_NOARGS, "(guest calls, host calls) made through this module"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastcall", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__fastcall(void)
{
    PyObject *m;

    if (PyType_Ready(&FuncType) < 0 || PyType_Ready(&HostType) < 0 ||
        PyType_Ready(&AnswerType) < 0)
        return NULL;
    str_current = PyUnicode_InternFromString("current");
    str_ex = PyUnicode_InternFromString("ex");
    str_status = PyUnicode_InternFromString("status");
    str_request_headers = PyUnicode_InternFromString("request_headers");
    str_response_headers = PyUnicode_InternFromString("response_headers");
    if (!str_current || !str_ex || !str_status || !str_request_headers || !str_response_headers)
        return NULL;
    m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Func", (PyObject *)&FuncType) < 0 ||
        PyModule_AddObjectRef(m, "Host", (PyObject *)&HostType) < 0 ||
        PyModule_AddObjectRef(m, "Answer", (PyObject *)&AnswerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
