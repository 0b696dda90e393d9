/* edgegw.wasm._native, phase.c: a request's filter chain, its common case in C.
 *
 * Every request calls each of its filters a few times: create its stream context, run
 * the request and response header phases, end the stream. Written in Python
 * (edgegw/wasm/stream.py) those loops, and the objects a request makes for them, cost
 * more than the guest calls and the hostcalls they make (bench/chain.py); here each step
 * is a few C-API calls. Only the common case is decided here: a filter that continues.
 * Anything else (a pause, a local reply, a failure, a filter that is off) is handed back
 * to stream.Chain, which owns those rules.
 *
 *   phase_open   create each filter's stream context (proxy_on_context_create)
 *   phase_run    one header phase, from a filter on, while filters continue
 *   phase_close  end each filter's stream (proxy_on_log, proxy_on_done, proxy_on_delete)
 *
 * The objects they work on are in phase_types.c and phase_chain.c.
 */
#include "native.h"

#include <time.h>

#define ACTION_PAUSE 1 /* proxy-wasm FilterHeadersStatus StopIteration */

PyObject *phase_error_type;
static PyObject *closed_type; /* WasmClosed: what a closed VM answers instead of running */
PyTypeObject *phase_state_class = &PhaseState_Type;

/* The filter's VM runs callbacks of `state` (None: of none). */
static void
enter(PyObject *plugin, PyObject *state)
{
    Py_XSETREF(((PhaseVm *)plugin)->current, Py_NewRef(state));
}

/* Its open streams (NULL and an error only while the collector tears the VM down). */
static PyObject *
streams_of(PyObject *plugin)
{
    PyObject *streams = ((PhaseVm *)plugin)->streams;

    if (streams == NULL)
        PyErr_SetString(PyExc_RuntimeError, "a filter VM without streams");
    return streams;
}

/* The WasmError being raised, taken (NULL: another error, left raised). */
static PyObject *
take_error(void)
{
    PyObject *type, *value, *tb;

    if (phase_error_type == NULL || !PyErr_ExceptionMatches(phase_error_type))
        return NULL;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* A closed VM's Store is freed (Plugin.close): its hooks must not run. Its answer is a
 * new WasmClosed (NULL: an error is raised). */
static PyObject *
closed_error(void)
{
    if (closed_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_native.set_types() was not called");
        return NULL;
    }
    return PyObject_CallFunction(closed_type, "s", "the filter's VM was closed");
}

static inline int
is_closed(PyObject *plugin)
{
    return ((PhaseVm *)plugin)->closed;
}

static int
replied(PhaseState *state)
{
    return state->local_reply != NULL && state->local_reply != Py_None;
}

Py_ssize_t
phase_run(PhaseChain *chain, PyObject *hooks, PyObject *headers, Py_ssize_t pseudo,
          Py_ssize_t index, Py_ssize_t stop, Py_ssize_t step, PyObject *eos,
          PyObject **result)
{
    PyObject *plugins = chain->plan->plugins;
    Py_ssize_t count = PyTuple_GET_SIZE(plugins);
    /* One clock read per hook boundary: a hook's end is the next hook's start, so a
     * phase through n filters reads the clock n + 1 times, not 2n. What runs between
     * two hooks (this loop's bookkeeping, no Python) counts towards the later one. */
    struct timespec began, ended;
    int timed = 0; /* began holds the previous hook's end */

    if (!PyList_Check(headers)) {
        PyErr_SetString(PyExc_TypeError, "a header phase's headers are a list");
        return -2;
    }
    if ((step != 1 && step != -1) || stop < -1 || stop > count) {
        PyErr_SetString(PyExc_ValueError, "a header phase out of the chain");
        return -2;
    }
    for (; index != stop; index += step) {
        PyObject *hook, *argv[4], *answer;
        PhaseVm *vm;
        long action;

        if (index < 0 || index >= count) {
            PyErr_SetString(PyExc_IndexError, "a header phase from outside the chain");
            return -2;
        }
        if (chain->off != NULL && PyDict_GET_SIZE(chain->off) > 0) {
            PyObject *key = PyLong_FromSsize_t(index);
            int found = key == NULL ? -1 : PyDict_Contains(chain->off, key);
            Py_XDECREF(key);
            if (found < 0)
                return -2;
            if (found) {
                *result = Py_NewRef(Py_None);
                return index;
            }
        }
        hook = PyTuple_GET_ITEM(hooks, index);
        if (hook == Py_None)
            continue; /* the filter does not export this callback */
        if (is_closed(PyTuple_GET_ITEM(plugins, index))) {
            if ((*result = closed_error()) == NULL)
                return -2;
            return index;
        }
        enter(PyTuple_GET_ITEM(plugins, index), (PyObject *)chain->state);
        argv[0] = NULL;
        argv[1] = phase_context(chain, index);
        argv[2] = PyLong_FromSsize_t(PyList_GET_SIZE(headers) + pseudo);
        argv[3] = eos;
        if (argv[2] == NULL)
            return -2;
        /* The hook may run Python (hostcalls): hold our own references meanwhile. */
        Py_INCREF(argv[1]);
        if (!timed)
            clock_gettime(CLOCK_MONOTONIC, &began);
        answer = PyObject_Vectorcall(hook, argv + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        clock_gettime(CLOCK_MONOTONIC, &ended);
        vm = (PhaseVm *)PyTuple_GET_ITEM(plugins, index);
        phase_vm_observe(vm, (double)(ended.tv_sec - began.tv_sec) +
                                 (double)(ended.tv_nsec - began.tv_nsec) * 1e-9);
        began = ended;
        timed = 1;
        Py_DECREF(argv[1]);
        Py_DECREF(argv[2]);
        if (answer == NULL) {
            /* A WasmError is the filter's answer; anything else propagates. */
            if ((*result = take_error()) == NULL)
                return -2;
            return index;
        }
        action = PyLong_CheckExact(answer) ? PyLong_AsLong(answer) : 0;
        if (action == -1 && PyErr_Occurred())
            PyErr_Clear(); /* too large to be PAUSE */
        if (replied(chain->state) || action == ACTION_PAUSE) {
            *result = answer;
            return index;
        }
        vm->continued++;
        Py_DECREF(answer);
    }
    return -1;
}

/* Filter i's context could not be created (its hook raised `exc`): it has none, and is
 * off for this request with that error (Chain._stopped). */
static int
creation_failed(PhaseChain *chain, Py_ssize_t i, PyObject *exc)
{
    PyObject *contexts = phase_contexts(chain), *off = phase_off(chain);
    PyObject *index = PyLong_FromSsize_t(i), *zero = PyLong_FromLong(0);
    int ok = contexts != NULL && off != NULL && index != NULL && zero != NULL &&
             PyDict_SetItem(off, index, exc) == 0;

    if (ok)
        PyList_SetItem(contexts, i, Py_NewRef(zero)); /* steals the new reference */
    Py_XDECREF(index);
    Py_XDECREF(zero);
    return ok ? 0 : -1;
}

/* phase_open failed at filter `last`: the filters before it, and it, lose the stream
 * they registered (nothing would ever end it: the Chain is never made), and run no
 * callback of it. The error being raised stays raised. */
static void
unregister(PhaseChain *chain, Py_ssize_t last)
{
    PyObject *plugins = chain->plan->plugins, *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    for (Py_ssize_t i = 0; i <= last; i++) {
        PyObject *plugin = PyTuple_GET_ITEM(plugins, i);
        PyObject *streams = ((PhaseVm *)plugin)->streams, *found;

        if (streams != NULL && PyDict_Check(streams)) {
            found = PyDict_GetItemWithError(streams, chain->context);
            if (found == (PyObject *)chain->state)
                PyDict_DelItem(streams, chain->context);
            PyErr_Clear(); /* the first error is the one to report */
        }
        enter(plugin, Py_None);
    }
    PyErr_Restore(type, value, tb);
}

int
phase_open(PhaseChain *chain)
{
    PyObject *plugins = chain->plan->plugins, *hooks = chain->plan->context_create;
    PyObject *state = (PyObject *)chain->state, *context = chain->context;
    PyObject *root = PyLong_FromLong(ROOT_CONTEXT); /* a small int: never fails */

    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plugins); i++) {
        PyObject *plugin = PyTuple_GET_ITEM(plugins, i), *hook = PyTuple_GET_ITEM(hooks, i);
        PyObject *streams, *argv[3] = {NULL, context, root}, *result, *exc;
        int ok;

        if (is_closed(plugin)) { /* a closed VM takes no new stream: off, as if it failed */
            ok = (exc = closed_error()) != NULL && creation_failed(chain, i, exc) == 0;
            Py_XDECREF(exc);
            if (!ok) {
                Py_DECREF(root);
                return -1;
            }
            continue;
        }
        streams = Py_XNewRef(streams_of(plugin)); /* held: the hook runs Python */
        ok = streams != NULL && PyDict_SetItem(streams, context, state) == 0;

        if (ok)
            enter(plugin, state);
        if (ok && hook != Py_None) {
            result = PyObject_Vectorcall(hook, argv + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                         NULL);
            ok = result != NULL;
            Py_XDECREF(result);
            if (!ok && (exc = take_error()) != NULL) {
                ok = PyDict_DelItem(streams, context) == 0 &&
                     creation_failed(chain, i, exc) == 0;
                Py_DECREF(exc);
            }
        }
        Py_XDECREF(streams);
        if (!ok) {
            Py_DECREF(root);
            unregister(chain, i);
            return -1;
        }
    }
    Py_DECREF(root);
    return 0;
}

/* Plugin.streams loses `context`, Plugin.current is None again. */
static int
release(PyObject *plugin, PyObject *context)
{
    PyObject *streams = streams_of(plugin);
    int rc = streams == NULL ? -1 : PyDict_Contains(streams, context);

    if (rc == 1)
        rc = PyDict_DelItem(streams, context);
    enter(plugin, Py_None);
    return rc < 0 ? -1 : 0;
}

PyObject *
phase_close(PhaseChain *chain)
{
    PyObject *plugins = chain->plan->plugins, *hooks = chain->plan->ends, *failed = Py_None;

    Py_INCREF(failed);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plugins); i++) {
        PyObject *plugin = PyTuple_GET_ITEM(plugins, i), *ends = PyTuple_GET_ITEM(hooks, i);
        PyObject *context = phase_context(chain, i), *exc = NULL;
        int ok = 1, none = PyObject_Not(context);

        if (none < 0) {
            Py_DECREF(failed);
            return NULL;
        }
        /* No context (its creation failed), or a VM replaced since (on_error: reload). */
        if (none || ((PhaseVm *)plugin)->closed)
            continue;
        Py_INCREF(context); /* the hooks run Python: hold our own reference */
        enter(plugin, (PyObject *)chain->state);
        for (Py_ssize_t k = 0; exc == NULL && k < PyTuple_GET_SIZE(ends); k++) {
            PyObject *argv[2] = {NULL, context};
            PyObject *result = PyObject_Vectorcall(PyTuple_GET_ITEM(ends, k), argv + 1,
                                                   1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            /* A failed filter is not called again: its later end hooks are skipped. */
            if (result == NULL && (exc = take_error()) == NULL)
                ok = 0;
            Py_XDECREF(result);
            if (!ok)
                break;
        }
        if (exc != NULL) {
            PyObject *pair = Py_BuildValue("(nN)", i, exc); /* steals exc */
            if (failed == Py_None)
                Py_SETREF(failed, PyList_New(0));
            ok = pair != NULL && failed != NULL && PyList_Append(failed, pair) == 0;
            Py_XDECREF(pair);
        }
        /* The stream is over whatever its hooks did. */
        ok = ok && release(plugin, context) == 0;
        Py_DECREF(context);
        if (!ok) {
            Py_XDECREF(failed);
            return NULL;
        }
    }
    return failed;
}

static PyObject *
set_types(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyType_Check(args[2]) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], (PyTypeObject *)PyExc_Exception) ||
        !PyType_IsSubtype((PyTypeObject *)args[1], &PhaseState_Type) ||
        !PyType_IsSubtype((PyTypeObject *)args[2], (PyTypeObject *)args[0])) {
        PyErr_SetString(PyExc_TypeError, "set_types() takes an exception class, a State "
                                         "subclass and a subclass of the exception class");
        return NULL;
    }
    Py_XSETREF(phase_error_type, Py_NewRef(args[0]));
    Py_XSETREF(closed_type, Py_NewRef(args[2]));
    Py_INCREF(args[1]);
    if (phase_state_class != &PhaseState_Type)
        Py_DECREF(phase_state_class);
    phase_state_class = (PyTypeObject *)args[1];
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_types", (PyCFunction)(void (*)(void))set_types, METH_FASTCALL,
     "set_types(error, state, closed): a hook raising error has answered (its filter "
     "fails); a Chain's state is a state (a State subclass); a closed VM's hooks are not "
     "called, closed (an error subclass) is their answer."},
    {NULL, NULL, 0, NULL},
};

static int
add_types(PyObject *module)
{
    static struct {
        const char *name;
        PyTypeObject *type;
    } types[] = {
        {"Vm", &PhaseVm_Type},       {"State", &PhaseState_Type},
        {"Plan", &PhasePlan_Type},   {"Chain", &PhaseChain_Type},
        {"Starter", &PhaseStarter_Type},
    };

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i].type) < 0 ||
            PyModule_AddObjectRef(module, types[i].name, (PyObject *)types[i].type) < 0)
            return -1;
    }
    return 0;
}

int
native_phase_add(PyObject *module)
{
    if (PyModule_AddIntConstant(module, "ROOT_CONTEXT", ROOT_CONTEXT) < 0 ||
        PyModule_AddIntConstant(module, "REQUEST_PSEUDO", REQUEST_PSEUDO) < 0 ||
        PyModule_AddIntConstant(module, "RESPONSE_PSEUDO", RESPONSE_PSEUDO) < 0 ||
        add_types(module) < 0 || phase_chain_ready(module) < 0)
        return -1;
    return PyModule_AddFunctions(module, methods);
}
