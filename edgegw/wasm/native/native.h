/* edgegw.wasm._native: the one C extension of edgegw, and what its files share.
 *
 * One module (edgegw/wasm/_native.pyi), several files compiled into it (setup.py), this
 * header the only place their shared struct layouts are declared:
 *
 *   module.c       the module: registers every type, function and constant below
 *   call.c         Func (guest exports called from Python), guest memory, Answer, the
 *                  epoch ticker, and init(): the wasmtime C functions by address
 *   host.c         Host: the env of a raw host function and its callback
 *   headers.c      the header-map hostcalls' common case, read and edited in C
 *   property.c     proxy_get_property's common case (the paths filters read per request)
 *   callout.c      the hostcalls of an http_call's answer (its :status and body, the
 *                  stream it resumes), answered in C, and decode_pairs
 *   phase.c        the per-filter loops of a request (open, run, close)
 *   phase_types.c  Vm (what the loops touch of a filter's VM), State (StreamState's
 *                  storage) and Plan (a route's filters, built once)
 *   phase_chain.c  Chain (one request's filters) and Starter (WasmRuntime.start)
 *   exchange.c     where C finds an Exchange's fields (native_ex_get)
 *   shm.c          Table: the shared data of every worker process
 *
 * The raw wasmtime calls stay in call.c and host.c; the phase files call Python callables
 * (the guest exports as Func), never wasmtime.
 */
#ifndef EDGEGW_NATIVE_H
#define EDGEGW_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <structmember.h>

#include <stdbool.h>
#include <stdint.h>

#define ROOT_CONTEXT 1    /* every filter's root context id; streams get the ids after it */
#define REQUEST_PSEUDO 4  /* :authority :path :method :scheme (state.RequestMap) */
#define RESPONSE_PSEUDO 1 /* :status (state.ResponseMap) */

/* A C field as a Python attribute of the same name. */
#define FIELD(type, name, kind, flags) {#name, kind, offsetof(type, name), flags, NULL}

/* What the loops read and write of a filter's VM (wasm.hostcalls.Hostcalls, hence
 * plugin.Plugin, extends it): the stream whose callback runs, every open stream by
 * context id, and whether the VM was closed (replaced after a failure, or its runtime
 * shut down): its Store is freed then, so the loops never call a closed VM's hooks. */
/* Calls into a filter's header hooks are timed here (filter_metrics.py reads and resets
 * the sums at each metrics flush): how many continued, and a histogram of their times
 * over CALL_BUCKETS upper bounds (seconds; the last is +Inf). */
#define CALL_BUCKETS 12
typedef struct {
    PyObject_HEAD
    PyObject *current; /* a State, or None between callbacks */
    PyObject *streams; /* dict: context id -> State */
    PyObject *call_response; /* the http_call answer being delivered (a CallResponse), or None */
    char closed;
    PyObject *geo; /* the `geoip:` lookup (Plugin.geo), None when not configured */
    unsigned long long continued;
    double call_seconds;
    unsigned long long call_counts[CALL_BUCKETS];
} PhaseVm;

extern const double phase_call_bounds[CALL_BUCKETS - 1];

/* Add one call of `seconds` to filter VM `vm`'s histogram. */
static inline void
phase_vm_observe(PhaseVm *vm, double seconds)
{
    int i = 0;

    while (i < CALL_BUCKETS - 1 && seconds > phase_call_bounds[i])
        i++;
    vm->call_counts[i]++;
    vm->call_seconds += seconds;
}

/* What the filters of one request share (edgegw/wasm/state.py subclasses it). Fields
 * are never NULL once made, unless Python deleted one: C reads NULL as None. */
typedef struct {
    PyObject_HEAD
    PyObject *ex, *local_reply, *resume, *failure;
    PyObject *request_body, *response_body, *request_trailers, *response_trailers;
    char encoding_local;
} PhaseState;

/* A route's filters (each a Vm) and their hooks, checked once when it is made
 * (stream.Plan). */
typedef struct {
    PyObject_HEAD
    PyObject *plugins, *context_create, *request_headers, *response_headers, *ends, *reload;
    char wants_response_body;
} PhasePlan;

/* One request's filters (stream.Chain): the plan, the shared state, the stream context
 * id (the same in every VM), and two things most requests never need, made when first
 * needed: the context id per filter (0 where its creation failed) and the filters that
 * are off ({index: error or None}). */
typedef struct {
    PyObject_HEAD
    PhasePlan *plan;
    PhaseState *state;
    PyObject *context, *contexts, *off, *body_at;
} PhaseChain;

extern PyTypeObject PhaseVm_Type, PhaseState_Type, PhasePlan_Type, PhaseChain_Type;
extern PyTypeObject PhaseStarter_Type;
extern PyObject *phase_error_type;      /* WasmError: a hook raising it has answered */
extern PyTypeObject *phase_state_class; /* the State subclass a Chain makes */

PhaseState *phase_state_make(PyTypeObject *type, PyObject *ex);
int phase_chain_ready(PyObject *module);

/* Filter i's context id (borrowed). */
static inline PyObject *
phase_context(PhaseChain *chain, Py_ssize_t i)
{
    return chain->contexts == NULL ? chain->context : PyList_GET_ITEM(chain->contexts, i);
}

/* chain->contexts and chain->off, made if they were not (borrowed; NULL: no memory). */
PyObject *phase_contexts(PhaseChain *chain);
PyObject *phase_off(PhaseChain *chain);

/* A header phase from filter `index` towards `stop` (excluded) by `step` (1 or -1),
 * each hook called with (context, map size, eos) while the filters continue. -1: every
 * filter went on; -2: an error is raised; otherwise the index of the filter that
 * stopped, *result (a new reference) being None when it is off, the WasmError it raised,
 * or its action. */
Py_ssize_t phase_run(PhaseChain *chain, PyObject *hooks, PyObject *headers,
                     Py_ssize_t pseudo, Py_ssize_t index, Py_ssize_t stop, Py_ssize_t step,
                     PyObject *eos, PyObject **result);
/* Create every filter's stream context: 0, or -1 with an error raised. */
int phase_open(PhaseChain *chain);
/* End every filter's stream: None, the list of (index, WasmError) of the filters that
 * failed, or NULL with an error raised. */
PyObject *phase_close(PhaseChain *chain);

/* ---- wasm values, guest memory, wasmtime (call.c) ---------------------------------- */

/* wasmtime_val_raw_t: a 16-byte union; an i32 or i64 lives in the low word. */
typedef struct {
    uint64_t lo, hi;
} RawVal;

#define MAX_VALS 24 /* the widest proxy-wasm import (grpc_call) has 11 params */

/* proxy-wasm v0.2.1 WasmResult values C answers by itself. */
#define STATUS_NOT_FOUND 1
#define STATUS_INVALID_MEMORY_ACCESS 6

typedef void *(*TrapNewFn)(const char *msg, size_t len);
extern TrapNewFn native_trap_new; /* wasmtime_trap_new */
extern unsigned long long native_guest_calls, native_host_calls;

/* 1 once init() gave the wasmtime functions; 0 with an error set before. */
int native_ready(void);

/* A guest's linear memory, once instantiated. The base never moves (memory_may_move is
 * off) and the size only grows: a cached size is never too large. */
typedef struct {
    void *ctx;
    const void *mem;
    uint8_t *base;
    size_t size;
} GuestMemory;

/* Guest memory [ptr, ptr + len) as a C pointer (both masked to wasm32); NULL when out of
 * bounds. */
uint8_t *guest_span(GuestMemory *m, uint64_t ptr, uint64_t len);

/* Answer bytes value to the guest as proxy-wasm hostcalls do: copied into memory from
 * the guest's allocator alloc (none for b""), its address and size written at ptr_ptr
 * and size_ptr. *status: OK or INVALID_MEMORY_ACCESS; -1: an error is set (the allocator
 * trapped). */
int put_answer(GuestMemory *m, PyObject *alloc, PyObject *value, uint64_t ptr_ptr,
               uint64_t size_ptr, int *status);
/* The answer of a value lookup (headers.c, property.c), value a new reference taken
 * over: NULL without an error 0 (not that case, impl answers), with one -1; None 1 with
 * NOT_FOUND; bytes 1 through put_answer (-1 if the allocator failed). */
int answer_found(GuestMemory *m, PyObject *alloc, PyObject *value, uint64_t ptr_ptr,
                 uint64_t size_ptr, int *status);

/* ---- host functions (host.c, headers.c) ------------------------------------------- */

/* The callback wasmtime_linker_define_func_unchecked registers, its env a Host. */
void *native_host_callback(void *env, void *caller, RawVal *vals, size_t n);

enum { EDIT_ADD = 1, EDIT_REPLACE, EDIT_REMOVE, EDIT_GET, EDIT_PROPERTY, EDIT_CALL_BODY,
       EDIT_EFFECTIVE, EDIT_CONTINUE };

/* add / replace / remove_header_map_value(map, key[, value]) on the headers of vm's
 * current stream: 1 done; 0 not that case (the Python method decides, nothing was
 * changed); -1 an error is set. */
int native_fast_edit(PhaseVm *vm, int edit, uint64_t map, PyObject *key, PyObject *value);
/* get_header_map_value(map, key, ptr_ptr, size_ptr) on vm's current stream, answered
 * through put_answer: 1 answered with *status; 0 not that case; -1 an error is set. */
int native_fast_get(PhaseVm *vm, GuestMemory *m, PyObject *alloc, uint64_t map,
                    PyObject *key, uint64_t ptr_ptr, uint64_t size_ptr, int *status);

/* get_property(path, ptr_ptr, size_ptr) of vm's current stream for the properties the
 * bundled filters read per request (property.c), answered through put_answer: 1
 * answered with *status; 0 not that case (the Python method answers); -1 an error is
 * set. */
int native_fast_property(PhaseVm *vm, GuestMemory *m, PyObject *alloc, PyObject *path,
                         uint64_t ptr_ptr, uint64_t size_ptr, int *status);
/* The :status of vm's http_call answer as bytes when map is its headers (6) and key is
 * ":status"; NULL without an error otherwise (impl decides), with one on failure. */
PyObject *native_call_status(PhaseVm *vm, uint64_t map, PyObject *key);
/* get_buffer_bytes of the answer's body (EDIT_CALL_BODY), set_effective_context
 * (EDIT_EFFECTIVE) or continue_stream (EDIT_CONTINUE), the raw params in vals: 1
 * answered with *status; 0 not that case (impl answers, nothing was changed); -1 an
 * error is set. */
int native_fast_callout(PhaseVm *vm, GuestMemory *m, PyObject *alloc, int edit, RawVal *vals,
                        int *status);

/* ---- Exchange fields (exchange.c) -------------------------------------------------- */

/* The fields of edgegw.chain.Exchange that C reads per request. Exchange is a slots
 * dataclass: set_exchange(Exchange) resolves each field's slot offset once from its
 * member descriptor, and an object of exactly that class is then read as a struct. Any
 * other object (a test's stand-in, a subclass) is read by attribute name, as before. */
typedef enum {
    EX_ROUTE,
    EX_METHOD,
    EX_PATH,
    EX_SCHEME,
    EX_AUTHORITY,
    EX_REQUEST_HEADERS,
    EX_RESPONSE_HEADERS,
    EX_STATUS,
    EX_CLIENT,
    EX_TRUSTED_PEER,
    EX_PROPERTIES,
    EX_FIELDS
} ExField;

/* ex.<field> (a new reference; NULL with an error set, AttributeError when unset). */
PyObject *native_ex_get(PyObject *ex, ExField field);

/* ---- registration (module.c calls each once) --------------------------------------- */

int native_call_add(PyObject *module);
int native_host_add(PyObject *module);
int native_exchange_add(PyObject *module);
int native_phase_add(PyObject *module);
int native_shm_add(PyObject *module);
int native_callout_add(PyObject *module);

#endif
