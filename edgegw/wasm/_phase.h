/* edgegw.wasm._phase: what its two C files share.
 *
 *   _phase.c        the per-filter loops (open, run, close) and the module
 *   _phase_types.c  Vm (what the loops touch of a filter's VM), State (StreamState's
 *                   storage) and Plan (a route's filters, built once)
 *   _phase_chain.c  Chain (one request's filters) and Starter (WasmRuntime.start)
 */
#ifndef EDGEGW_PHASE_H
#define EDGEGW_PHASE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <structmember.h>

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
    char closed;
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

#endif
