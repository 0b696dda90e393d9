/* edgegw.wasm._phase: a request's filter chain, its common case in C.
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
 * The types that hold a request's state are in _phase_types.c.
 */
#include "_phase.h"

#define ACTION_PAUSE 1 /* proxy-wasm FilterHeadersStatus StopIteration */

PyObject *phase_error_type;
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

static int
replied(PhaseState *state)
{
    return state->local_reply != NULL && state->local_reply != Py_None;
}

Py_ssize_t
phase_run(PyObject *plugins, PyObject *hooks, PyObject *contexts, PyObject *off,
          PhaseState *state, PyObject *headers, Py_ssize_t pseudo, Py_ssize_t index,
          Py_ssize_t stop, Py_ssize_t step, PyObject *eos, PyObject **result)
{
    Py_ssize_t count = PyTuple_GET_SIZE(plugins);

    if (!PyList_Check(headers)) {
        PyErr_SetString(PyExc_TypeError, "a header phase's headers are a list");
        return -2;
    }
    for (; index != stop; index += step) {
        PyObject *hook, *argv[4], *answer;
        long action;

        if (index < 0 || index >= count) {
            PyErr_SetString(PyExc_IndexError, "run(): index out of the chain");
            return -2;
        }
        if (PyDict_GET_SIZE(off) > 0) {
            PyObject *key = PyLong_FromSsize_t(index);
            int found = key == NULL ? -1 : PyDict_Contains(off, key);
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
        enter(PyTuple_GET_ITEM(plugins, index), (PyObject *)state);
        argv[0] = NULL;
        argv[1] = PyList_GET_ITEM(contexts, index);
        argv[2] = PyLong_FromSsize_t(PyList_GET_SIZE(headers) + pseudo);
        argv[3] = eos;
        if (argv[2] == NULL)
            return -2;
        /* The hook may run Python (hostcalls): hold our own references meanwhile. */
        Py_INCREF(argv[1]);
        answer = PyObject_Vectorcall(hook, argv + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
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
        if (replied(state) || action == ACTION_PAUSE) {
            *result = answer;
            return index;
        }
        Py_DECREF(answer);
    }
    return -1;
}

PyObject *
phase_open(PyObject *plugins, PyObject *hooks, PhaseState *state, PyObject *contexts)
{
    PyObject *failed = PyDict_New(), *root = PyLong_FromLong(ROOT_CONTEXT);

    if (failed == NULL || root == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plugins); i++) {
        PyObject *plugin = PyTuple_GET_ITEM(plugins, i), *hook = PyTuple_GET_ITEM(hooks, i);
        PyObject *context = PyList_GET_ITEM(contexts, i), *argv[3], *result = NULL, *exc;
        PyObject *streams = Py_XNewRef(streams_of(plugin)); /* held: the hook runs Python */
        int ok = streams != NULL && PyDict_SetItem(streams, context, (PyObject *)state) == 0;

        if (ok)
            enter(plugin, (PyObject *)state);
        if (ok && hook != Py_None) {
            Py_INCREF(context); /* the hook runs Python: hold our own reference */
            argv[0] = NULL, argv[1] = context, argv[2] = root;
            result = PyObject_Vectorcall(hook, argv + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                         NULL);
            ok = result != NULL;
            Py_XDECREF(result);
            if (!ok && (exc = take_error()) != NULL) {
                /* The filter is off for this request (Chain._stopped): no stream. */
                PyObject *index = PyLong_FromSsize_t(i), *zero = PyLong_FromLong(0);
                ok = index != NULL && zero != NULL && PyDict_DelItem(streams, context) == 0 &&
                     PyDict_SetItem(failed, index, exc) == 0;
                if (ok) {
                    PyList_SetItem(contexts, i, zero); /* steals zero */
                    zero = NULL;
                }
                Py_XDECREF(index);
                Py_XDECREF(zero);
                Py_DECREF(exc);
            }
            Py_DECREF(context);
        }
        Py_XDECREF(streams);
        if (!ok)
            goto fail;
    }
    Py_DECREF(root);
    return failed;
fail:
    Py_XDECREF(failed);
    Py_XDECREF(root);
    return NULL;
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
phase_close(PyObject *plugins, PyObject *hooks, PhaseState *state, PyObject *contexts)
{
    PyObject *failed = PyList_New(0);

    if (failed == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plugins); i++) {
        PyObject *plugin = PyTuple_GET_ITEM(plugins, i), *ends = PyTuple_GET_ITEM(hooks, i);
        PyObject *context = PyList_GET_ITEM(contexts, i), *exc = NULL;
        int ok = 1;

        /* No context (its creation failed), or a VM replaced since (on_error: reload). */
        if (PyObject_Not(context) || ((PhaseVm *)plugin)->closed)
            continue;
        Py_INCREF(context); /* the hooks run Python: hold our own reference */
        enter(plugin, (PyObject *)state);
        for (Py_ssize_t k = 0; ok && exc == NULL && k < PyTuple_GET_SIZE(ends); k++) {
            PyObject *argv[2] = {NULL, context};
            PyObject *result = PyObject_Vectorcall(PyTuple_GET_ITEM(ends, k), argv + 1,
                                                   1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            /* A failed filter is not called again: its later end hooks are skipped. */
            if (result == NULL)
                ok = (exc = take_error()) != NULL;
            Py_XDECREF(result);
        }
        if (exc != NULL) {
            PyObject *pair = Py_BuildValue("(nN)", i, exc); /* steals exc */
            ok = pair != NULL && PyList_Append(failed, pair) == 0;
            Py_XDECREF(pair);
        }
        /* The stream is over whatever its hooks did. */
        ok = ok && release(plugin, context) == 0;
        Py_DECREF(context);
        if (!ok)
            goto fail;
    }
    return failed;
fail:
    Py_DECREF(failed);
    return NULL;
}

/* run(): the rest of a header phase after Chain dealt with a stop (stream.py). */
static PyObject *
run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *plugins, *hooks, *contexts, *off, *state, *result = NULL;
    Py_ssize_t pseudo, index, stop, step, count;

    (void)module;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "run() takes 11 arguments");
        return NULL;
    }
    plugins = args[0], hooks = args[1], contexts = args[2], off = args[3], state = args[4];
    if (!PyTuple_Check(plugins) || !PyTuple_Check(hooks) || !PyList_Check(contexts) ||
        !PyDict_Check(off) || !PyObject_TypeCheck(state, &PhaseState_Type)) {
        PyErr_SetString(PyExc_TypeError, "run(tuple, tuple, list, dict, State, list, ...)");
        return NULL;
    }
    pseudo = PyLong_AsSsize_t(args[6]);
    index = PyLong_AsSsize_t(args[7]);
    stop = PyLong_AsSsize_t(args[8]);
    step = PyLong_AsSsize_t(args[9]);
    if (PyErr_Occurred())
        return NULL;
    count = PyTuple_GET_SIZE(plugins);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(plugins, i), &PhaseVm_Type)) {
            PyErr_SetString(PyExc_TypeError, "run(): each filter is a Vm");
            return NULL;
        }
    }
    if (PyTuple_GET_SIZE(hooks) != count || PyList_GET_SIZE(contexts) != count ||
        (step != 1 && step != -1) || stop < -1 || stop > count) {
        PyErr_SetString(PyExc_ValueError, "run(): inconsistent chain");
        return NULL;
    }
    index = phase_run(plugins, hooks, contexts, off, (PhaseState *)state, args[5], pseudo,
                      index, stop, step, args[10], &result);
    if (index == -2)
        return NULL;
    return Py_BuildValue("(nN)", index, index == -1 ? Py_NewRef(Py_None) : result);
}

static PyObject *
set_types(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], (PyTypeObject *)PyExc_Exception) ||
        !PyType_IsSubtype((PyTypeObject *)args[1], &PhaseState_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "set_types() takes an exception class and a State subclass");
        return NULL;
    }
    Py_XSETREF(phase_error_type, Py_NewRef(args[0]));
    Py_INCREF(args[1]);
    if (phase_state_class != &PhaseState_Type)
        Py_DECREF(phase_state_class);
    phase_state_class = (PyTypeObject *)args[1];
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(plugins, hooks, contexts, off, state, headers, pseudo, index, stop, step, "
     "end_of_stream) -> (index, result): call hooks[index](contexts[index], "
     "len(headers) + pseudo, end_of_stream) from index towards stop, each after setting "
     "plugins[index].current = state. (-1, None): every filter continued. Otherwise the "
     "filter where it stopped, with None (index in off), the exception it raised (of the "
     "set_types error class) or its action (it paused or set state.local_reply)."},
    {"set_types", (PyCFunction)(void (*)(void))set_types, METH_FASTCALL,
     "set_types(error, state): a hook raising error has answered (its filter fails); "
     "a Chain's state is a state (a State subclass)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_phase", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__phase(void)
{
    PyObject *module;

    if ((module = PyModule_Create(&moduledef)) == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "ROOT_CONTEXT", ROOT_CONTEXT) < 0 ||
        PyModule_AddIntConstant(module, "REQUEST_PSEUDO", REQUEST_PSEUDO) < 0 ||
        PyModule_AddIntConstant(module, "RESPONSE_PSEUDO", RESPONSE_PSEUDO) < 0 ||
        phase_types_ready(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
