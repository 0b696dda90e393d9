/* edgegw.wasm._phase: what its two C files share.
 *
 *   _phase.c        the per-filter loops (open, run, close) and the module
 *   _phase_types.c  the objects they work on: Vm (what they touch of a filter's VM),
 *                   State (StreamState's storage), Plan (a route's filters, built once)
 *                   and Chain (one request's filters)
 */
#ifndef EDGEGW_PHASE_H
#define EDGEGW_PHASE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define ROOT_CONTEXT 1    /* every filter's root context id; streams get the ids after it */
#define REQUEST_PSEUDO 4  /* :authority :path :method :scheme (state.RequestMap) */
#define RESPONSE_PSEUDO 1 /* :status (state.ResponseMap) */

/* What the loops read and write of a filter's VM (wasm.hostcalls.Hostcalls, hence
 * plugin.Plugin, extends it): the stream whose callback runs, every open stream by
 * context id, and whether the VM was closed (replaced after a failure). */
typedef struct {
    PyObject_HEAD
    PyObject *current; /* a State, or None between callbacks */
    PyObject *streams; /* dict: context id -> State */
    char closed;
} PhaseVm;

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

/* One request's filters (stream.Chain): the plan, the shared state, the context id in
 * each VM (0: its creation failed) and the filters that are off ({index: error}). */
typedef struct {
    PyObject_HEAD
    PhasePlan *plan;
    PhaseState *state;
    PyObject *plugins, *contexts, *off, *body_at;
    char wants_response_body;
} PhaseChain;

extern PyTypeObject PhaseVm_Type, PhaseState_Type, PhasePlan_Type, PhaseChain_Type;
extern PyObject *phase_error_type;      /* WasmError: a hook raising it has answered */
extern PyTypeObject *phase_state_class; /* the State subclass a Chain makes */

int phase_types_ready(PyObject *module);

/* Filter i of a header phase stopped: its index >= 0 and *result (a new reference: None
 * when it is off, the WasmError it raised, or its action). -1: every filter went on;
 * -2: an error is raised. */
Py_ssize_t phase_run(PyObject *plugins, PyObject *hooks, PyObject *contexts, PyObject *off,
                     PhaseState *state, PyObject *headers, Py_ssize_t pseudo,
                     Py_ssize_t index, Py_ssize_t stop, Py_ssize_t step, PyObject *eos,
                     PyObject **result);
PyObject *phase_open(PyObject *plugins, PyObject *hooks, PhaseState *state,
                     PyObject *contexts);
PyObject *phase_close(PyObject *plugins, PyObject *hooks, PhaseState *state,
                      PyObject *contexts);

#endif
