/* edgegw.wasm._phase: the objects of a request's filter chain.
 *
 *   Vm     what a chain touches of a filter's VM; hostcalls.Hostcalls (Plugin) extends it
 *   State  what the filters of one request share; state.StreamState adds its methods
 *   Plan   a route's filters and their hooks, checked once; stream.Plan builds it
 *   Chain  one request's filters: made, run through both header phases while every
 *          filter continues, and ended, all in C; stream.Chain adds every other path
 *
 * A filtered request used to cost three Python frames and two objects before any filter
 * ran (runtime.start -> Chain -> StreamState), and one frame per phase around the C loop;
 * the fixed cost of a route's first filter was mostly those (docs/benchmarks.md).
 */
#include "_phase.h"

#include <stddef.h>
#include <structmember.h>

static PyObject *str_request_headers, *str_response_headers, *str_after_stop;
static PyObject *str_encode_stopped, *str_end_failed, *str_wake;
static PyObject *int_request_pseudo, *int_response_pseudo, *int_forward, *int_backward;
static uint32_t last_context = ROOT_CONTEXT;

#define FIELD(type, name, kind, flags) {#name, kind, offsetof(type, name), flags, NULL}

/* --- Vm --------------------------------------------------------------------------- */

/* Arguments are the subclass's (Plugin.__init__). */
static PyObject *
vm_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PhaseVm *self = (PhaseVm *)type->tp_alloc(type, 0);

    (void)args, (void)kwds;
    if (self == NULL)
        return NULL;
    self->current = Py_NewRef(Py_None);
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
    return 0;
}

static int
vm_clear(PhaseVm *self)
{
    Py_CLEAR(self->current);
    Py_CLEAR(self->streams);
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
    FIELD(PhaseVm, closed, T_BOOL, 0),
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject PhaseVm_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._phase.Vm",
    .tp_basicsize = sizeof(PhaseVm),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Vm(): a filter VM's current stream, open streams and closed flag.",
    .tp_new = vm_new,
    .tp_traverse = (traverseproc)vm_traverse,
    .tp_clear = (inquiry)vm_clear,
    .tp_dealloc = (destructor)vm_dealloc,
    .tp_members = vm_members,
};

/* --- State ------------------------------------------------------------------------ */

static PhaseState *
state_make(PyTypeObject *type, PyObject *ex)
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
    return (PyObject *)state_make(type, ex);
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
    .tp_name = "edgegw.wasm._phase.State",
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
    .tp_name = "edgegw.wasm._phase.Plan",
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

/* --- Chain ------------------------------------------------------------------------ */

/* The next stream context id: one per request, shared by its filters' VMs (ids need
 * only be unique within a VM); after 2**32 - 1 they start again above the root's. */
static PyObject *
next_context(void)
{
    if (++last_context <= ROOT_CONTEXT)
        last_context = ROOT_CONTEXT + 1;
    return PyLong_FromUnsignedLong(last_context);
}

static PyObject *
chain_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *plan, *ex, *context;
    PhasePlan *p;
    PhaseChain *self;
    Py_ssize_t count;

    if ((kwds != NULL && PyDict_GET_SIZE(kwds) > 0) ||
        !PyArg_UnpackTuple(args, "Chain", 2, 2, &plan, &ex))
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "Chain(plan, ex)");
    if (!PyObject_TypeCheck(plan, &PhasePlan_Type) || ((PhasePlan *)plan)->plugins == NULL)
        return PyErr_Format(PyExc_TypeError, "Chain(): the plan is not a made Plan");
    p = (PhasePlan *)plan;
    if ((self = (PhaseChain *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->plan = (PhasePlan *)Py_NewRef(plan);
    self->plugins = Py_NewRef(p->plugins);
    self->wants_response_body = p->wants_response_body;
    self->body_at = Py_NewRef(Py_None);
    count = PyTuple_GET_SIZE(p->plugins);
    if ((self->state = state_make(phase_state_class, ex)) == NULL ||
        (self->contexts = PyList_New(count)) == NULL || (context = next_context()) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        PyList_SET_ITEM(self->contexts, i, Py_NewRef(context));
    Py_DECREF(context);
    self->off = phase_open(p->plugins, p->context_create, self->state, self->contexts);
    if (self->off == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* A header phase through every filter, in config order (forward) or reverse. None:
 * every filter went on. Otherwise what Chain._after_stop makes of the stop: an
 * awaitable (for the request, through Chain._encode_stopped). */
static PyObject *
chain_phase(PhaseChain *self, PyObject *const *args, Py_ssize_t nargs, int forward)
{
    PyObject *hooks, *headers, *result = NULL, *index_obj, *stopped, *out;
    Py_ssize_t count = PyTuple_GET_SIZE(self->plugins), index;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "a header phase takes (ex, end_of_stream)");
        return NULL;
    }
    hooks = forward ? self->plan->request_headers : self->plan->response_headers;
    headers = PyObject_GetAttr(args[0], forward ? str_request_headers : str_response_headers);
    if (headers == NULL)
        return NULL;
    index = phase_run(self->plugins, hooks, self->contexts, self->off, self->state, headers,
                      forward ? REQUEST_PSEUDO : RESPONSE_PSEUDO, forward ? 0 : count - 1,
                      forward ? count : -1, forward ? 1 : -1, args[1], &result);
    if (index < 0) {
        Py_DECREF(headers);
        return index == -1 ? Py_NewRef(Py_None) : NULL;
    }
    if ((index_obj = PyLong_FromSsize_t(index)) == NULL) {
        stopped = NULL;
    } else {
        PyObject *argv[] = {(PyObject *)self, index_obj, result, hooks, headers,
                            forward ? int_request_pseudo : int_response_pseudo, args[1],
                            forward ? int_forward : int_backward};
        stopped = PyObject_VectorcallMethod(str_after_stop, argv,
                                            8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(index_obj);
    }
    Py_DECREF(result);
    Py_DECREF(headers);
    if (stopped == NULL || !forward)
        return stopped;
    {
        PyObject *argv[] = {(PyObject *)self, args[0], stopped};
        out = PyObject_VectorcallMethod(str_encode_stopped, argv,
                                        3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_DECREF(stopped);
    return out;
}

static PyObject *
chain_request_headers(PhaseChain *self, PyObject *const *args, Py_ssize_t nargs)
{
    return chain_phase(self, args, nargs, 1);
}

static PyObject *
chain_response_headers(PhaseChain *self, PyObject *const *args, Py_ssize_t nargs)
{
    return chain_phase(self, args, nargs, 0);
}

/* The request is over: wake a filter still waiting, end every stream; failures at the
 * end go to Chain._end_failed (they can only be logged). */
static PyObject *
chain_done(PhaseChain *self, PyObject *ex)
{
    PyObject *failed, *out;

    (void)ex;
    if (self->state->resume != NULL && self->state->resume != Py_None) {
        if ((out = PyObject_CallMethodNoArgs((PyObject *)self->state, str_wake)) == NULL)
            return NULL;
        Py_DECREF(out);
    }
    failed = phase_close(self->plugins, self->plan->ends, self->state, self->contexts);
    if (failed == NULL || PyList_GET_SIZE(failed) == 0) {
        out = failed == NULL ? NULL : Py_NewRef(Py_None);
    } else {
        out = PyObject_CallMethodOneArg((PyObject *)self, str_end_failed, failed);
    }
    Py_XDECREF(failed);
    return out;
}

static int
chain_traverse(PhaseChain *self, visitproc visit, void *arg)
{
    Py_VISIT(self->plan);
    Py_VISIT(self->state);
    Py_VISIT(self->plugins);
    Py_VISIT(self->contexts);
    Py_VISIT(self->off);
    Py_VISIT(self->body_at);
    return 0;
}

static int
chain_clear(PhaseChain *self)
{
    Py_CLEAR(self->plan);
    Py_CLEAR(self->state);
    Py_CLEAR(self->plugins);
    Py_CLEAR(self->contexts);
    Py_CLEAR(self->off);
    Py_CLEAR(self->body_at);
    return 0;
}

static void
chain_dealloc(PhaseChain *self)
{
    PyObject_GC_UnTrack(self);
    chain_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef chain_methods[] = {
    {"request_headers", (PyCFunction)(void (*)(void))chain_request_headers, METH_FASTCALL,
     "request_headers(ex, end_of_stream): the request headers through every filter."},
    {"response_headers", (PyCFunction)(void (*)(void))chain_response_headers,
     METH_FASTCALL, "response_headers(ex, end_of_stream): the response headers, reverse."},
    {"done", (PyCFunction)chain_done, METH_O, "done(ex): end every filter's stream."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef chain_members[] = {
    FIELD(PhaseChain, plan, T_OBJECT_EX, READONLY),
    FIELD(PhaseChain, state, T_OBJECT_EX, READONLY),
    FIELD(PhaseChain, plugins, T_OBJECT_EX, READONLY),
    FIELD(PhaseChain, contexts, T_OBJECT_EX, READONLY),
    FIELD(PhaseChain, off, T_OBJECT_EX, READONLY),
    {"_body_at", T_OBJECT_EX, offsetof(PhaseChain, body_at), 0, NULL},
    FIELD(PhaseChain, wants_response_body, T_BOOL, READONLY),
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject PhaseChain_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._phase.Chain",
    .tp_basicsize = sizeof(PhaseChain),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Chain(plan, ex): one request's filters, their contexts created "
              "(stream.Chain).",
    .tp_new = chain_new,
    .tp_traverse = (traverseproc)chain_traverse,
    .tp_clear = (inquiry)chain_clear,
    .tp_dealloc = (destructor)chain_dealloc,
    .tp_members = chain_members,
    .tp_methods = chain_methods,
};

int
phase_types_ready(PyObject *module)
{
    static struct { const char *name; PyTypeObject *type; } types[] = {
        {"Vm", &PhaseVm_Type}, {"State", &PhaseState_Type}, {"Plan", &PhasePlan_Type},
        {"Chain", &PhaseChain_Type},
    };

    str_request_headers = PyUnicode_InternFromString("request_headers");
    str_response_headers = PyUnicode_InternFromString("response_headers");
    str_after_stop = PyUnicode_InternFromString("_after_stop");
    str_encode_stopped = PyUnicode_InternFromString("_encode_stopped");
    str_end_failed = PyUnicode_InternFromString("_end_failed");
    str_wake = PyUnicode_InternFromString("wake");
    int_request_pseudo = PyLong_FromLong(REQUEST_PSEUDO);
    int_response_pseudo = PyLong_FromLong(RESPONSE_PSEUDO);
    int_forward = PyLong_FromLong(1);
    int_backward = PyLong_FromLong(-1);
    if (str_request_headers == NULL || str_response_headers == NULL ||
        str_after_stop == NULL || str_encode_stopped == NULL || str_end_failed == NULL ||
        str_wake == NULL || int_request_pseudo == NULL || int_response_pseudo == NULL ||
        int_forward == NULL || int_backward == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i].type) < 0 ||
            PyModule_AddObjectRef(module, types[i].name, (PyObject *)types[i].type) < 0)
            return -1;
    }
    return 0;
}
