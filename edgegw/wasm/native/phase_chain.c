/* edgegw.wasm._native, phase_chain.c: one request's filters.
 *
 *   Chain    made (every filter's stream context created), run through both header
 *            phases while every filter continues, and ended, all in C; stream.Chain
 *            extends it with every other path (pauses, replies, failures, bodies)
 *   Starter  WasmRuntime.start: a route's Plan (made once, by Python) and a Chain for it
 *
 * Served, a request's filter work costs several times what it costs in a loop in one
 * process: between two requests the server runs enough code to evict the caches, so
 * every Python frame, object and C function a request touches is fetched again
 * (bench/chain.py measures both). So a filtered request whose filters all continue runs
 * no Python frame of its own and makes two objects (the Chain and its State); the
 * per-filter context list and the dict of filters that are off are made only when a
 * filter needs them.
 */
#include "native.h"

static PyObject *str_after_stop, *str_encode_stopped, *str_end_failed, *str_wake, *str_name;
static PyObject *int_request_pseudo, *int_response_pseudo, *int_forward, *int_backward;
static uint32_t last_context = ROOT_CONTEXT;

/* The next stream context id: one per request, shared by its filters' VMs (ids need
 * only be unique within a VM); after 2**32 - 1 they start again above the root's. */
static PyObject *
next_context(void)
{
    if (++last_context <= ROOT_CONTEXT)
        last_context = ROOT_CONTEXT + 1;
    return PyLong_FromUnsignedLong(last_context);
}

PyObject *
phase_contexts(PhaseChain *chain)
{
    Py_ssize_t count = PyTuple_GET_SIZE(chain->plan->plugins);

    if (chain->contexts == NULL && (chain->contexts = PyList_New(count)) != NULL) {
        for (Py_ssize_t i = 0; i < count; i++)
            PyList_SET_ITEM(chain->contexts, i, Py_NewRef(chain->context));
    }
    return chain->contexts;
}

PyObject *
phase_off(PhaseChain *chain)
{
    if (chain->off == NULL)
        chain->off = PyDict_New();
    return chain->off;
}

static PyObject *
chain_make(PyTypeObject *type, PhasePlan *plan, PyObject *ex)
{
    PhaseChain *self = (PhaseChain *)type->tp_alloc(type, 0);

    if (self == NULL)
        return NULL;
    self->plan = (PhasePlan *)Py_NewRef(plan);
    self->body_at = Py_NewRef(Py_None);
    if ((self->state = phase_state_make(phase_state_class, ex)) == NULL ||
        (self->context = next_context()) == NULL || phase_open(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
made_plan(PyObject *plan)
{
    if (!PyObject_TypeCheck(plan, &PhasePlan_Type) || ((PhasePlan *)plan)->plugins == NULL) {
        PyErr_SetString(PyExc_TypeError, "a Chain's plan is a made Plan");
        return 0;
    }
    return 1;
}

static PyObject *
chain_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *plan, *ex;

    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "Chain(plan, ex) takes no keywords");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Chain", 2, 2, &plan, &ex) || !made_plan(plan))
        return NULL;
    return chain_make(type, (PhasePlan *)plan, ex);
}

/* What Chain._after_stop makes of a stop at `index`: an awaitable. */
static PyObject *
after_stop(PhaseChain *self, Py_ssize_t index, PyObject *result, PyObject *hooks,
           PyObject *headers, PyObject *eos, int forward)
{
    PyObject *number = PyLong_FromSsize_t(index), *out;

    if (number == NULL)
        return NULL;
    PyObject *argv[] = {(PyObject *)self, number, result, hooks, headers,
                        forward ? int_request_pseudo : int_response_pseudo, eos,
                        forward ? int_forward : int_backward};
    out = PyObject_VectorcallMethod(str_after_stop, argv, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                    NULL);
    Py_DECREF(number);
    return out;
}

/* A header phase through every filter, in config order (forward) or reverse. None:
 * every filter went on. Otherwise an awaitable of the outcome (Chain._after_stop; for
 * the request, through Chain._encode_stopped). */
static PyObject *
chain_phase(PhaseChain *self, PyObject *const *args, Py_ssize_t nargs, int forward)
{
    PyObject *hooks, *headers, *result = NULL, *stopped, *out;
    Py_ssize_t count = PyTuple_GET_SIZE(self->plan->plugins), index;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "a header phase takes (ex, end_of_stream)");
        return NULL;
    }
    hooks = forward ? self->plan->request_headers : self->plan->response_headers;
    headers = native_ex_get(args[0], forward ? EX_REQUEST_HEADERS : EX_RESPONSE_HEADERS);
    if (headers == NULL)
        return NULL;
    index = phase_run(self, hooks, headers, forward ? REQUEST_PSEUDO : RESPONSE_PSEUDO,
                      forward ? 0 : count - 1, forward ? count : -1, forward ? 1 : -1, args[1],
                      &result);
    if (index < 0) {
        Py_DECREF(headers);
        return index == -1 ? Py_NewRef(Py_None) : NULL;
    }
    stopped = after_stop(self, index, result, hooks, headers, args[1], forward);
    Py_DECREF(result);
    Py_DECREF(headers);
    if (stopped == NULL || !forward)
        return stopped;
    PyObject *argv[] = {(PyObject *)self, args[0], stopped};
    out = PyObject_VectorcallMethod(str_encode_stopped, argv,
                                    3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
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

/* _run(hooks, headers, pseudo, index, stop, step, end_of_stream): the rest of a header
 * phase after Chain._after_stop dealt with a stop. */
static PyObject *
chain_run(PhaseChain *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t numbers[4], index;
    PyObject *result = NULL;

    if (nargs != 7 || !PyTuple_Check(args[0]) ||
        PyTuple_GET_SIZE(args[0]) != PyTuple_GET_SIZE(self->plan->plugins)) {
        PyErr_SetString(PyExc_TypeError, "_run(hooks: one per filter, headers, pseudo, "
                                         "index, stop, step, end_of_stream)");
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if ((numbers[i] = PyLong_AsSsize_t(args[2 + i])) == -1 && PyErr_Occurred())
            return NULL;
    }
    index = phase_run(self, args[0], args[1], numbers[0], numbers[1], numbers[2], numbers[3],
                      args[6], &result);
    if (index == -2)
        return NULL;
    return Py_BuildValue("(nN)", index, index == -1 ? Py_NewRef(Py_None) : result);
}

/* The request is over: wake a filter still waiting, end every stream; failures at the
 * end go to Chain._end_failed (they can only be logged). */
static PyObject *
chain_done(PhaseChain *self, PyObject *ex)
{
    PyObject *failed, *out;
    PhaseState *state = self->state;

    (void)ex;
    if (state->resume != NULL && state->resume != Py_None) {
        if ((out = PyObject_CallMethodNoArgs((PyObject *)state, str_wake)) == NULL)
            return NULL;
        Py_DECREF(out);
    }
    if ((failed = phase_close(self)) == NULL || failed == Py_None)
        return failed;
    out = PyObject_CallMethodOneArg((PyObject *)self, str_end_failed, failed);
    Py_DECREF(failed);
    return out;
}

static PyObject *
chain_get_contexts(PhaseChain *self, void *closure)
{
    (void)closure;
    return Py_XNewRef(phase_contexts(self));
}

/* The plan's, for Python (stream.Chain, the pipeline). */
static PyObject *
chain_get_plugins(PhaseChain *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->plan->plugins);
}

static PyObject *
chain_get_wants_response_body(PhaseChain *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->plan->wants_response_body);
}

static PyObject *
chain_get_off(PhaseChain *self, void *closure)
{
    (void)closure;
    return Py_XNewRef(phase_off(self));
}

static int
chain_traverse(PhaseChain *self, visitproc visit, void *arg)
{
    Py_VISIT(self->plan);
    Py_VISIT(self->state);
    Py_VISIT(self->context);
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
    Py_CLEAR(self->context);
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
    {"_run", (PyCFunction)(void (*)(void))chain_run, METH_FASTCALL,
     "_run(hooks, headers, pseudo, index, stop, step, end_of_stream) -> (index, result): "
     "hooks[i](context, len(headers) + pseudo, end_of_stream) from index towards stop "
     "while filters continue. (-1, None): every filter went on. Otherwise the filter "
     "that stopped, with None (it is off), the WasmError it raised, or its action (it "
     "paused or set state.local_reply)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef chain_members[] = {
    FIELD(PhaseChain, plan, T_OBJECT_EX, READONLY),
    FIELD(PhaseChain, state, T_OBJECT_EX, READONLY),
    FIELD(PhaseChain, context, T_OBJECT_EX, READONLY),
    {"_body_at", T_OBJECT_EX, offsetof(PhaseChain, body_at), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef chain_getset[] = {
    {"plugins", (getter)chain_get_plugins, NULL, "the plan's filters", NULL},
    {"wants_response_body", (getter)chain_get_wants_response_body, NULL,
     "a filter has a response body callback", NULL},
    {"contexts", (getter)chain_get_contexts, NULL, "each filter's context id (0: none)",
     NULL},
    {"off", (getter)chain_get_off, NULL, "the filters not called again: {index: error}",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PhaseChain_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._native.Chain",
    .tp_basicsize = sizeof(PhaseChain),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Chain(plan, ex): one request's filters, their contexts created "
              "(stream.Chain).",
    .tp_new = chain_new,
    .tp_traverse = (traverseproc)chain_traverse,
    .tp_clear = (inquiry)chain_clear,
    .tp_dealloc = (destructor)chain_dealloc,
    .tp_members = chain_members,
    .tp_getset = chain_getset,
    .tp_methods = chain_methods,
};

/* --- Starter ---------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *plans;     /* dict: route name -> Plan (WasmRuntime._plans) */
    PyObject *make_plan; /* route -> Plan, on a miss */
    PyTypeObject *chain_class;
    vectorcallfunc vectorcall;
} PhaseStarter;

/* starter(ex): the Chain of ex.route's filters, or None when it has none. */
static PyObject *
starter_call(PhaseStarter *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *route, *name, *plan;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "start(ex)");
        return NULL;
    }
    if ((route = native_ex_get(args[0], EX_ROUTE)) == NULL)
        return NULL;
    /* A Route is a frozen dataclass without slots (edgegw/model.py): its name is read by
     * attribute. */
    if ((name = PyObject_GetAttr(route, str_name)) == NULL) {
        Py_DECREF(route);
        return NULL;
    }
    plan = Py_XNewRef(PyDict_GetItemWithError(self->plans, name));
    if (plan == NULL && !PyErr_Occurred()) {
        plan = PyObject_CallOneArg(self->make_plan, route);
        if (plan != NULL && made_plan(plan) && PyDict_SetItem(self->plans, name, plan) < 0)
            Py_CLEAR(plan);
    }
    if (plan != NULL && !made_plan(plan)) /* whatever put it there */
        Py_CLEAR(plan);
    Py_DECREF(route);
    Py_DECREF(name);
    if (plan == NULL)
        return NULL;
    PyObject *out = PyTuple_GET_SIZE(((PhasePlan *)plan)->plugins) == 0
                        ? Py_NewRef(Py_None)
                        : chain_make(self->chain_class, (PhasePlan *)plan, args[0]);
    Py_DECREF(plan);
    return out;
}

static PyObject *
starter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"plans", "make_plan", "chain_class", NULL};
    PyObject *plans, *make_plan, *chain_class;
    PhaseStarter *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!:Starter", keywords, &PyDict_Type,
                                     &plans, &make_plan, &PyType_Type, &chain_class))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)chain_class, &PhaseChain_Type)) {
        PyErr_SetString(PyExc_TypeError, "Starter(): chain_class is a Chain subclass");
        return NULL;
    }
    if ((self = (PhaseStarter *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->plans = Py_NewRef(plans);
    self->make_plan = Py_NewRef(make_plan);
    self->chain_class = (PyTypeObject *)Py_NewRef(chain_class);
    self->vectorcall = (vectorcallfunc)starter_call;
    return (PyObject *)self;
}

static int
starter_traverse(PhaseStarter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->plans);
    Py_VISIT(self->make_plan);
    Py_VISIT(self->chain_class);
    return 0;
}

static int
starter_clear(PhaseStarter *self)
{
    Py_CLEAR(self->plans);
    Py_CLEAR(self->make_plan);
    Py_CLEAR(self->chain_class);
    return 0;
}

static void
starter_dealloc(PhaseStarter *self)
{
    PyObject_GC_UnTrack(self);
    starter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject PhaseStarter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgegw.wasm._native.Starter",
    .tp_basicsize = sizeof(PhaseStarter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Starter(plans, make_plan, chain_class): called with an Exchange, the "
              "Chain of its route (plans[route.name], made by make_plan(route) on a "
              "miss), or None when the route has no filters.",
    .tp_new = starter_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(PhaseStarter, vectorcall),
    .tp_traverse = (traverseproc)starter_traverse,
    .tp_clear = (inquiry)starter_clear,
    .tp_dealloc = (destructor)starter_dealloc,
};

int
phase_chain_ready(PyObject *module)
{
    (void)module;
    str_after_stop = PyUnicode_InternFromString("_after_stop");
    str_encode_stopped = PyUnicode_InternFromString("_encode_stopped");
    str_end_failed = PyUnicode_InternFromString("_end_failed");
    str_wake = PyUnicode_InternFromString("wake");
    str_name = PyUnicode_InternFromString("name");
    int_request_pseudo = PyLong_FromLong(REQUEST_PSEUDO);
    int_response_pseudo = PyLong_FromLong(RESPONSE_PSEUDO);
    int_forward = PyLong_FromLong(1);
    int_backward = PyLong_FromLong(-1);
    return str_after_stop == NULL || str_encode_stopped == NULL ||
                   str_end_failed == NULL || str_wake == NULL ||
                   str_name == NULL || int_request_pseudo == NULL ||
                   int_response_pseudo == NULL || int_forward == NULL ||
                   int_backward == NULL
               ? -1
               : 0;
}
