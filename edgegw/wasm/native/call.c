/* edgegw.wasm._native, call.c: the per-request crossings between Python and wasm.
 *
 * Through ctypes, a guest call and a hostcall were almost all ctypes argument conversion
 * and libffi (perf: wasmtime itself was ~1% of the samples; docs/benchmarks.md has the
 * figures). This module makes the same raw wasmtime C-API calls from C:
 *
 *   Func      a guest export, called like a Python function with i32/i64 arguments;
 *             wasmtime_func_call_unchecked under the epoch deadline, which the
 *             outermost guest call of a store sets (limits.cpu bounds a callback).
 *   (Host, the env of a host function, is in host.c.)
 *   Answer    how a Python hostcall answers bytes: through the guest's allocator into
 *             its memory, the address and size written where the guest asked.
 *   start_ticker  a native thread that increments the engine's epoch (limits.cpu).
 *
 * The extension links against nothing: fastcall.py hands over the addresses of the wasmtime
 * functions (wasmtime-py's ctypes library) through init(), so the pinned wasmtime wheel
 * stays the only copy of wasmtime in the process.
 *
 * The GIL is held during guest calls. That is why the epoch ticker is a native thread:
 * a Python ticker would need the GIL that an endless guest loop never gives back.
 * Host callbacks still take the GIL with PyGILState_Ensure (a no-op when it is held),
 * because wasmtime-py's public API (instantiate, which runs the start function) calls
 * guest code with the GIL released.
 */
#include "native.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

typedef void *(*CallUncheckedFn)(void *ctx, const void *func, RawVal *vals, size_t n,
                                 void **trap);
typedef void (*SetDeadlineFn)(void *ctx, uint64_t ticks);
typedef bool (*TrapCodeFn)(const void *trap, uint8_t *code);
typedef void (*IncrementEpochFn)(const void *engine);
typedef uint8_t *(*MemoryDataFn)(void *ctx, const void *memory);
typedef size_t (*MemorySizeFn)(void *ctx, const void *memory);

static CallUncheckedFn call_unchecked;
static SetDeadlineFn set_epoch_deadline;
TrapNewFn native_trap_new;
static TrapCodeFn trap_code;
static uint8_t interrupt_code; /* WASMTIME_TRAP_CODE_INTERRUPT: the epoch deadline */
static IncrementEpochFn increment_epoch;
static MemoryDataFn memory_data;
static MemorySizeFn memory_size;

unsigned long long native_guest_calls, native_host_calls;

int
native_ready(void)
{
    if (call_unchecked == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_native.init() was not called");
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

/* initial-exec: an access is one %fs-relative load, not a __tls_get_addr call (the
 * default model of -fPIC code, ~200 instructions per filtered request; bench/chain.py).
 * The 16 bytes come from the static TLS glibc reserves for modules loaded later. */
#define NATIVE_TLS _Thread_local __attribute__((tls_model("initial-exec")))
static NATIVE_TLS const Running *running;
/* Guest calls this thread saw end at the CPU deadline: an outer call that then fails
 * with its hostcall's trap (no trap code) failed because of that deadline too. */
static NATIVE_TLS unsigned long long interrupted;

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
    native_guest_calls++;
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

    if (!native_ready())
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
    .tp_name = "edgegw.wasm._native.Func",
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

uint8_t *
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

int
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

int
answer_found(GuestMemory *m, PyObject *alloc, PyObject *value, uint64_t ptr_ptr,
             uint64_t size_ptr, int *status)
{
    int rc;

    if (value == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (value == Py_None) {
        Py_DECREF(value);
        *status = STATUS_NOT_FOUND;
        return 1;
    }
    rc = put_answer(m, alloc, value, ptr_ptr, size_ptr, status);
    Py_DECREF(value);
    return rc < 0 ? -1 : 1;
}

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
    .tp_name = "edgegw.wasm._native.Answer",
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
    if (!native_ready())
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
    native_trap_new = (TrapNewFn)(uintptr_t)trap;
    increment_epoch = (IncrementEpochFn)(uintptr_t)epoch;
    return PyLong_FromVoidPtr((void *)native_host_callback);
}

static PyObject *
set_deadline(PyObject *module, PyObject *args)
{
    unsigned long long ctx, ticks;

    (void)module;
    if (!native_ready())
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
    return Py_BuildValue("KK", native_guest_calls, native_host_calls);
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

int
native_call_add(PyObject *module)
{
    if (PyType_Ready(&FuncType) < 0 || PyType_Ready(&AnswerType) < 0 ||
        PyModule_AddObjectRef(module, "Func", (PyObject *)&FuncType) < 0 ||
        PyModule_AddObjectRef(module, "Answer", (PyObject *)&AnswerType) < 0)
        return -1;
    return PyModule_AddFunctions(module, methods);
}
