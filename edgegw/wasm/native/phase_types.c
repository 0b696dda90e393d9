/* edgegw.wasm._native, phase_types.c: the long-lived objects of a filter chain and its
 * shared state.
 *
 *   Vm     what a chain touches of a filter's VM; hostcalls.Hostcalls (Plugin) extends it
 *   State  what the filters of one request share; state.StreamState adds its methods
 *   Plan   a route's filters and their hooks, checked once; stream.Plan builds it
 */
#include "native.h"

/* --- Vm --------------------------------------------------------------------------- */

/* filter_metrics.CALL_BUCKETS without +Inf; tests/unit/test_filter_metrics.py checks. */
const double phase_call_bounds[CALL_BUCKETS - 1] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
};

/* take_calls() -> (continued, seconds, counts): the sums since the last take; resets. */
static PyObject *
vm_take_calls(PhaseVm *self, PyObject *unused)
{
    PyObject *counts = PyTuple_New(CALL_BUCKETS), *out;

    (void)unused;
    if (counts == NULL)
        return NULL;
    for (int i = 0; i < CALL_BUCKETS; i++) {
        PyObject *n = PyLong_FromUnsignedLongLong(self->call_counts[i]);
        if (n == NULL) {
            Py_DECREF(counts);
            return NULL;
        }
        PyTuple_SET_ITEM(counts, i, n);
    }
    out = Py_BuildValue("(KdN)", self->continued, self->call_seconds, counts);
    if (out != NULL) {
        self->continued = 0;
        self->call_seconds = 0.0;
        memset(self->call_counts, 0, sizeof(self->call_counts));
    }
    return out;
}

/* observe_call(seconds): a call timed in Python (body hooks, stream.Chain._step). */
static PyObject *
vm_observe_call(PhaseVm *self, PyObject *arg)
{
    double seconds = PyFloat_AsDouble(arg);

    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    phase_vm_observe(self, seconds);
    Py_RETURN_NONE;
}

static PyMethodDef vm_methods[] = {
    {"take_calls", (PyCFunction)vm_take_calls, METH_NOARGS, NULL},
    {"observe_call", (PyCFunction)vm_observe_call, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

/* Arguments are the subclass's (Plugin.__init__). */
static PyObject *
vm_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PhaseVm *self = (PhaseVm *)type->tp_alloc(type, 0);

    (void)args, (void)kwds;
    if (self == NULL)
        return NULL;
    self->current = Py_NewRef(Py_None);
    self->geo = Py_NewRef(Py_None);
    self->call_response = Py_NewRef(Py_None);
    if ((self->streams = PyDict_New()) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
vm_traverse(PhaseVm *self, visitproc visit, void *arg)
{
    Py_VISIT(self->current);
    Py_VISIT(self->streams);
    Py_VISIT(self->geo);
    Py_VISIT(self->call_response);
    return 0;
}

static int
vm_clear(PhaseVm *self)
{
    Py_CLEAR(self->current);
    Py_CLEAR(self->streams);
    Py_CLEAR(self->geo);
    Py_CLEAR(self->call_response);
    return 0;
}

static void
vm_dealloc(PhaseVm *self)
{
    PyObject_GC_UnTrack(self);
    vm_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef vm_members[] = {
    FIELD(PhaseVm, current, T_OBJECT_EX, 0),
    FIELD(PhaseVm, streams, T_OBJECT_EX, READONLY),
    FIELD(PhaseVm, call_response, T_OBJECT, 0),
    FIELD(PhaseVm, closed, T_BOOL, 0),
    FIELD(PhaseVm, geo, T_OBJECT, 0), /* T_OBJECT: deleting it reads as None */
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject PhaseVm_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._native.Vm",
    .tp_basicsize = sizeof(PhaseVm),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Vm(): a filter VM's current stream, open streams, closed flag and the "
              "http_call answer being delivered.",
    .tp_new = vm_new,
    .tp_traverse = (traverseproc)vm_traverse,
    .tp_clear = (inquiry)vm_clear,
    .tp_dealloc = (destructor)vm_dealloc,
    .tp_members = vm_members,
    .tp_methods = vm_methods,
};

/* --- State ------------------------------------------------------------------------ */

PhaseState *
phase_state_make(PyTypeObject *type, PyObject *ex)
{
    PhaseState *self = (PhaseState *)type->tp_alloc(type, 0);

    if (self == NULL)
        return NULL;
    self->ex = Py_NewRef(ex);
    self->local_reply = Py_NewRef(Py_None);
    self->resume = Py_NewRef(Py_None);
    self->failure = Py_NewRef(Py_None);
    self->request_body = Py_NewRef(Py_None);
    self->response_body = Py_NewRef(Py_None);
    self->request_trailers = Py_NewRef(Py_None);
    self->response_trailers = Py_NewRef(Py_None);
    return self;
}

static PyObject *
state_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"ex", NULL};
    PyObject *ex;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:StreamState", keywords, &ex))
        return NULL;
    return (PyObject *)phase_state_make(type, ex);
}

static int
state_traverse(PhaseState *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ex);
    Py_VISIT(self->local_reply);
    Py_VISIT(self->resume);
    Py_VISIT(self->failure);
    Py_VISIT(self->request_body);
    Py_VISIT(self->response_body);
    Py_VISIT(self->request_trailers);
    Py_VISIT(self->response_trailers);
    return 0;
}

static int
state_clear(PhaseState *self)
{
    Py_CLEAR(self->ex);
    Py_CLEAR(self->local_reply);
    Py_CLEAR(self->resume);
    Py_CLEAR(self->failure);
    Py_CLEAR(self->request_body);
    Py_CLEAR(self->response_body);
    Py_CLEAR(self->request_trailers);
    Py_CLEAR(self->response_trailers);
    return 0;
}

static void
state_dealloc(PhaseState *self)
{
    PyObject_GC_UnTrack(self);
    state_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef state_members[] = {
    FIELD(PhaseState, ex, T_OBJECT_EX, READONLY),
    FIELD(PhaseState, local_reply, T_OBJECT_EX, 0),
    FIELD(PhaseState, resume, T_OBJECT_EX, 0),
    FIELD(PhaseState, failure, T_OBJECT_EX, 0),
    FIELD(PhaseState, request_body, T_OBJECT_EX, 0),
    FIELD(PhaseState, response_body, T_OBJECT_EX, 0),
    FIELD(PhaseState, request_trailers, T_OBJECT_EX, 0),
    FIELD(PhaseState, response_trailers, T_OBJECT_EX, 0),
    FIELD(PhaseState, encoding_local, T_BOOL, 0),
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject PhaseState_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._native.State",
    .tp_basicsize = sizeof(PhaseState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "State(ex): what the filters of one request share (state.StreamState).",
    .tp_new = state_new,
    .tp_traverse = (traverseproc)state_traverse,
    .tp_clear = (inquiry)state_clear,
    .tp_dealloc = (destructor)state_dealloc,
    .tp_members = state_members,
};

/* --- Plan ------------------------------------------------------------------------- */

/* Every field is a tuple with one item per filter, each plugin a Vm and each end a tuple
 * of hooks: the loops rely on it without checking again. */
static int
plan_init(PhasePlan *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"plugins", "context_create", "request_headers",
                               "response_headers", "ends", "wants_response_body", "reload",
                               NULL};
    PyObject *plugins, *create, *request, *response, *ends, *reload;
    int wants_body;
    Py_ssize_t count;

    if (self->plugins != NULL) { /* chains rely on its tuples: they never change */
        PyErr_SetString(PyExc_TypeError, "a Plan is made once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!O!pO:Plan", keywords,
                                     &PyTuple_Type, &plugins, &PyTuple_Type, &create,
                                     &PyTuple_Type, &request, &PyTuple_Type, &response,
                                     &PyTuple_Type, &ends, &wants_body, &reload))
        return -1;
    count = PyTuple_GET_SIZE(plugins);
    if (PyTuple_GET_SIZE(create) != count || PyTuple_GET_SIZE(request) != count ||
        PyTuple_GET_SIZE(response) != count || PyTuple_GET_SIZE(ends) != count) {
        PyErr_SetString(PyExc_ValueError, "Plan(): one hook of each kind per filter");
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(plugins, i), &PhaseVm_Type)) {
            PyErr_SetString(PyExc_TypeError, "Plan(): each filter is a Vm");
            return -1;
        }
        if (!PyTuple_Check(PyTuple_GET_ITEM(ends, i))) {
            PyErr_SetString(PyExc_TypeError, "Plan(): each filter's ends are a tuple");
            return -1;
        }
    }
    Py_XSETREF(self->plugins, Py_NewRef(plugins));
    Py_XSETREF(self->context_create, Py_NewRef(create));
    Py_XSETREF(self->request_headers, Py_NewRef(request));
    Py_XSETREF(self->response_headers, Py_NewRef(response));
    Py_XSETREF(self->ends, Py_NewRef(ends));
    Py_XSETREF(self->reload, Py_NewRef(reload));
    self->wants_response_body = (char)wants_body;
    return 0;
}

static int
plan_traverse(PhasePlan *self, visitproc visit, void *arg)
{
    Py_VISIT(self->plugins);
    Py_VISIT(self->context_create);
    Py_VISIT(self->request_headers);
    Py_VISIT(self->response_headers);
    Py_VISIT(self->ends);
    Py_VISIT(self->reload);
    return 0;
}

static int
plan_clear(PhasePlan *self)
{
    Py_CLEAR(self->plugins);
    Py_CLEAR(self->context_create);
    Py_CLEAR(self->request_headers);
    Py_CLEAR(self->response_headers);
    Py_CLEAR(self->ends);
    Py_CLEAR(self->reload);
    return 0;
}

static void
plan_dealloc(PhasePlan *self)
{
    PyObject_GC_UnTrack(self);
    plan_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef plan_members[] = {
    FIELD(PhasePlan, plugins, T_OBJECT_EX, READONLY),
    FIELD(PhasePlan, context_create, T_OBJECT_EX, READONLY),
    FIELD(PhasePlan, request_headers, T_OBJECT_EX, READONLY),
    FIELD(PhasePlan, response_headers, T_OBJECT_EX, READONLY),
    FIELD(PhasePlan, ends, T_OBJECT_EX, READONLY),
    FIELD(PhasePlan, reload, T_OBJECT_EX, READONLY),
    FIELD(PhasePlan, wants_response_body, T_BOOL, READONLY),
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject PhasePlan_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._native.Plan",
    .tp_basicsize = sizeof(PhasePlan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Plan(plugins, context_create, request_headers, response_headers, ends, "
              "wants_response_body, reload): a route's filters (stream.Plan).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)plan_init,
    .tp_traverse = (traverseproc)plan_traverse,
    .tp_clear = (inquiry)plan_clear,
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_members = plan_members,
};
