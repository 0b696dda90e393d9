/* edgegw.wasm._phase: the per-filter loops of a request's filter chain, in C.
 *
 * Every request calls each of its filters a few times: create its stream context, run
 * the request and response header phases, end the stream. Written in Python
 * (edgegw/wasm/stream.py) those loops cost more per filter than the guest calls and the
 * hostcalls they make (bench/chain.py); here each step is a few C-API calls. Only the
 * common case is decided here: a filter that continues. Anything else (a pause, a local
 * reply, a failure, a filter that is off) is handed back to Chain, which owns those
 * rules.
 *
 *   open   create each filter's stream context (proxy_on_context_create)
 *   run    one header phase, from a filter on, while filters continue
 *   close  end each filter's stream (proxy_on_log, proxy_on_done, proxy_on_delete)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define ACTION_PAUSE 1 /* proxy-wasm FilterHeadersStatus StopIteration */

static PyObject *error_type;  /* exceptions of this type are answers (WasmError) */
static PyObject *str_current;     /* Plugin.current */
static PyObject *str_streams;     /* Plugin.streams: context id -> StreamState */
static PyObject *str_closed;      /* Plugin.closed */
static PyObject *str_local_reply; /* StreamState.local_reply */
static PyObject *went_on;         /* (-1, None): every filter continued */

static PyObject *
stop_at(Py_ssize_t index, PyObject *result)
{
    PyObject *number = PyLong_FromSsize_t(index), *out;

    if (number == NULL)
        return NULL;
    out = PyTuple_Pack(2, number, result);
    Py_DECREF(number);
    return out;
}

/* The WasmError being raised, taken (NULL: another error, left raised). */
static PyObject *
take_error(void)
{
    PyObject *type, *value, *tb;

    if (error_type == NULL || !PyErr_ExceptionMatches(error_type))
        return NULL;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* The hook raised: a WasmError is the filter's answer, anything else propagates. */
static PyObject *
failed_at(Py_ssize_t index)
{
    PyObject *exc = take_error(), *out;

    if (exc == NULL)
        return NULL;
    out = stop_at(index, exc);
    Py_DECREF(exc);
    return out;
}

static PyObject *
run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *plugins, *hooks, *contexts, *off, *state, *headers, *eos;
    Py_ssize_t pseudo, index, stop, step, count;

    (void)module;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "run() takes 11 arguments");
        return NULL;
    }
    plugins = args[0], hooks = args[1], contexts = args[2], off = args[3];
    state = args[4], headers = args[5], eos = args[10];
    if (!PyTuple_Check(plugins) || !PyTuple_Check(hooks) || !PyList_Check(contexts) ||
        !PyDict_Check(off) || !PyList_Check(headers)) {
        PyErr_SetString(PyExc_TypeError, "run(tuple, tuple, list, dict, state, list, ...)");
        return NULL;
    }
    pseudo = PyLong_AsSsize_t(args[6]);
    index = PyLong_AsSsize_t(args[7]);
    stop = PyLong_AsSsize_t(args[8]);
    step = PyLong_AsSsize_t(args[9]);
    if (PyErr_Occurred())
        return NULL;
    count = PyTuple_GET_SIZE(plugins);
    if (PyTuple_GET_SIZE(hooks) != count || PyList_GET_SIZE(contexts) != count ||
        (step != 1 && step != -1) || stop < -1 || stop > count) {
        PyErr_SetString(PyExc_ValueError, "run(): inconsistent chain");
        return NULL;
    }
    for (; index != stop; index += step) {
        PyObject *hook, *argv[4], *result, *reply;
        long action;
        int stopped;

        if (index < 0 || index >= count) {
            PyErr_SetString(PyExc_IndexError, "run(): index out of the chain");
            return NULL;
        }
        if (PyDict_GET_SIZE(off) > 0) {
            PyObject *key = PyLong_FromSsize_t(index);
            int found = key == NULL ? -1 : PyDict_Contains(off, key);
            Py_XDECREF(key);
            if (found < 0)
                return NULL;
            if (found)
                return stop_at(index, Py_None);
        }
        hook = PyTuple_GET_ITEM(hooks, index);
        if (hook == Py_None)
            continue; /* the filter does not export this callback */
        if (PyObject_SetAttr(PyTuple_GET_ITEM(plugins, index), str_current, state) < 0)
            return NULL;
        argv[0] = NULL;
        argv[1] = PyList_GET_ITEM(contexts, index);
        argv[2] = PyLong_FromSsize_t(PyList_GET_SIZE(headers) + pseudo);
        argv[3] = eos;
        if (argv[2] == NULL)
            return NULL;
        /* The hook may run Python (hostcalls): hold our own references meanwhile. */
        Py_INCREF(argv[1]);
        result = PyObject_Vectorcall(hook, argv + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(argv[1]);
        Py_DECREF(argv[2]);
        if (result == NULL)
            return failed_at(index);
        reply = PyObject_GetAttr(state, str_local_reply);
        if (reply == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        action = PyLong_CheckExact(result) ? PyLong_AsLong(result) : 0;
        if (action == -1 && PyErr_Occurred())
            PyErr_Clear(); /* too large to be PAUSE */
        stopped = reply != Py_None || action == ACTION_PAUSE;
        Py_DECREF(reply);
        if (stopped) {
            PyObject *out = stop_at(index, result);
            Py_DECREF(result);
            return out;
        }
        Py_DECREF(result);
    }
    return Py_NewRef(went_on);
}

static int
check_chain(PyObject *plugins, PyObject *hooks, PyObject *contexts)
{
    if (!PyTuple_Check(plugins) || !PyTuple_Check(hooks) || !PyList_Check(contexts) ||
        PyTuple_GET_SIZE(hooks) != PyTuple_GET_SIZE(plugins) ||
        PyList_GET_SIZE(contexts) != PyTuple_GET_SIZE(plugins)) {
        PyErr_SetString(PyExc_TypeError, "a chain is (tuple, tuple of the same size, list)");
        return 0;
    }
    return 1;
}

static PyObject *
open_contexts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *plugins, *hooks, *state, *contexts, *root, *failed;

    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "open() takes 5 arguments");
        return NULL;
    }
    plugins = args[0], hooks = args[1], state = args[2], contexts = args[3], root = args[4];
    if (!check_chain(plugins, hooks, contexts) || (failed = PyDict_New()) == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plugins); i++) {
        PyObject *plugin = PyTuple_GET_ITEM(plugins, i), *hook = PyTuple_GET_ITEM(hooks, i);
        PyObject *context = PyList_GET_ITEM(contexts, i), *argv[3], *result = NULL, *exc;
        PyObject *streams = PyObject_GetAttr(plugin, str_streams);
        int ok = streams != NULL && PyDict_SetItem(streams, context, state) == 0 &&
                 PyObject_SetAttr(plugin, str_current, state) == 0;

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
        if (!ok) {
            Py_DECREF(failed);
            return NULL;
        }
    }
    return failed;
}

/* Plugin.streams loses `context`, Plugin.current is None again. */
static int
release(PyObject *plugin, PyObject *context)
{
    PyObject *streams = PyObject_GetAttr(plugin, str_streams);
    int rc = streams == NULL ? -1 : PyDict_Contains(streams, context);

    if (rc == 1)
        rc = PyDict_DelItem(streams, context);
    Py_XDECREF(streams);
    return rc < 0 ? -1 : PyObject_SetAttr(plugin, str_current, Py_None);
}

static PyObject *
close_contexts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *plugins, *hooks, *state, *contexts, *failed;

    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "close() takes 4 arguments");
        return NULL;
    }
    plugins = args[0], hooks = args[1], state = args[2], contexts = args[3];
    if (!check_chain(plugins, hooks, contexts) || (failed = PyList_New(0)) == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plugins); i++) {
        PyObject *plugin = PyTuple_GET_ITEM(plugins, i), *ends = PyTuple_GET_ITEM(hooks, i);
        PyObject *context = PyList_GET_ITEM(contexts, i), *closed, *exc = NULL;
        int skip, ok;

        closed = PyTuple_Check(ends) ? PyObject_GetAttr(plugin, str_closed) : NULL;
        if (closed == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "close(): each filter's hooks are a tuple");
            goto fail;
        }
        /* No context (its creation failed), or a VM replaced since (on_error: reload). */
        skip = PyObject_Not(context) || closed == Py_True;
        Py_DECREF(closed);
        if (skip)
            continue;
        Py_INCREF(context); /* the hooks run Python: hold our own reference */
        ok = PyObject_SetAttr(plugin, str_current, state) == 0;
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

static PyObject *
set_error_type(PyObject *module, PyObject *type)
{
    (void)module;
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type,
                                                 (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "set_error_type() takes an exception class");
        return NULL;
    }
    Py_XSETREF(error_type, Py_NewRef(type));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(plugins, hooks, contexts, off, state, headers, pseudo, index, stop, step, "
     "end_of_stream) -> (index, result): call hooks[index](contexts[index], "
     "len(headers) + pseudo, end_of_stream) from index towards stop, each after setting "
     "plugins[index].current = state. (-1, None): every filter continued. Otherwise the "
     "filter where it stopped, with None (index in off), the exception it raised (of the "
     "set_error_type class) or its action (it paused or set state.local_reply)."},
    {"open", (PyCFunction)(void (*)(void))open_contexts, METH_FASTCALL,
     "open(plugins, hooks, state, contexts, root) -> {index: error}: for each filter, "
     "plugins[i].streams[contexts[i]] = state, plugins[i].current = state, then "
     "hooks[i](contexts[i], root) unless None. A filter whose hook raised a WasmError: "
     "its stream entry removed, contexts[i] = 0, and the error in the answer."},
    {"close", (PyCFunction)(void (*)(void))close_contexts, METH_FASTCALL,
     "close(plugins, hooks, state, contexts) -> [(index, error)]: for each filter with a "
     "context whose VM is not closed: current = state, each of the tuple hooks[i] called "
     "with contexts[i] (the rest skipped after a WasmError), then its stream released "
     "(del streams[contexts[i]], current = None)."},
    {"set_error_type", set_error_type, METH_O,
     "set_error_type(cls): exceptions of cls raised by a hook are returned, not raised."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_phase", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__phase(void)
{
    str_current = PyUnicode_InternFromString("current");
    str_local_reply = PyUnicode_InternFromString("local_reply");
    str_streams = PyUnicode_InternFromString("streams");
    str_closed = PyUnicode_InternFromString("closed");
    went_on = Py_BuildValue("(nO)", (Py_ssize_t)-1, Py_None);
    if (str_current == NULL || str_local_reply == NULL || str_streams == NULL ||
        str_closed == NULL || went_on == NULL)
        return NULL;
    return PyModule_Create(&moduledef);
}
