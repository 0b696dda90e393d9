/* edgegw.wasm._native: the module. Each file registers its own types, functions and
 * constants (native.h lists the files); this only puts them into one module, so that
 * they share one header, one build and one set of struct layouts. */
#include "native.h"

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "edgegw.wasm._native",
    "edgegw's C extension: the wasm fast path, the filter chain and the shared data table.",
    -1, /* its state is per process (the wasmtime functions, the ticker, the types) */
    NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *module = PyModule_Create(&moduledef);

    if (module == NULL)
        return NULL;
    if (native_call_add(module) < 0 || native_host_add(module) < 0 ||
        native_exchange_add(module) < 0 || native_phase_add(module) < 0 ||
        native_shm_add(module) < 0 || native_callout_add(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
