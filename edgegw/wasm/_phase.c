/* edgegw.wasm._phase: one header phase of a filter chain, the loop in C.
 *
 * A request's header phases call one hook per filter: set the plugin's current stream,
 * call on_request_headers / on_response_headers with the header count, look at the
 * answer. Written in Python (Chain._step) the loop cost more per filter than the guest
 * call and the hostcall together (bench/chain.py); here it is a few C calls. Only the
 * common case is decided here: a filter that continues. Anything else (a pause, a local
 * reply, a failure, a filter that is off) stops the loop and is handed back to
 * Chain._stopped, which owns those rules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define ACTION_PAUSE 1 /* proxy-wasm FilterHeadersStatus StopIteration */

static PyObject *error_type;  /* exceptions of this type are answers (WasmError) */
static PyObject *str_current; /* Plugin.current */
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

/* The hook raised: an error_type exception is the filter's answer, anything else
 * propagates. */
static PyObject *
failed_at(Py_ssize_t index)
{
    PyObject *type, *value, *tb, *out;

    if (error_type == NULL || !PyErr_ExceptionMatches(error_type))
        return NULL;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    out = stop_at(index, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
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
    went_on = Py_BuildValue("(nO)", (Py_ssize_t)-1, Py_None);
    if (str_current == NULL || str_local_reply == NULL || went_on == NULL)
        return NULL;
    return PyModule_Create(&moduledef);
}
