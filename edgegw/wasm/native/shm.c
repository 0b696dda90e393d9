/* edgegw.wasm._native, shm.c: proxy-wasm shared data for every worker process.
 *
 * Envoy keeps shared data once per process, seen by all its worker threads; edgegw's
 * workers are processes, so the table lives in a shared mapping: a file in the runtime
 * directory that the supervisor creates and each worker maps (or, with no runtime dir,
 * an anonymous mapping, shared with fork()ed children only).
 *
 * Layout: Header | Slot[nslots] | heap.
 *   Slot   an open-addressing index entry: the key's hash and 1 + the heap offset of its
 *          current record (0: empty). nslots >= 2 * max_keys, so probing always ends.
 *   heap   records appended at `top`: {slot, cas, ns, klen, vlen} key value, 8-aligned.
 *          A set writes a whole new record, then publishes it with one store of the
 *          slot's offset; the record it replaces becomes garbage, which compaction
 *          slides out when `top` reaches the end. The heap is max_bytes * 5/4 so that a
 *          compaction always frees a quarter: appends stay amortized O(size).
 *
 * One process-shared robust mutex guards the table (pthread_mutexattr_setrobust(3)): a
 * process killed while holding it hands the next locker EOWNERDEAD, which recounts the
 * header from the slots (a record is live iff its slot points at it, so a half-written
 * set is simply garbage) and resets the table if the dead process was compacting.
 * The lock is held for a hash probe and a memcpy, never across Python or wasm code; the
 * GIL stays held meanwhile, so threads of one process never wait on each other here.
 *
 * Namespaces keep the host's own entries (shared queues, ns 1 and 2) apart from filter
 * keys (ns 0), whatever bytes a filter uses.
 */
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC 0x6467657765646773ULL
#define LAYOUT 1u
#define MAX_KEY 1024 /* same bound as a header name; longer keys are BAD_ARGUMENT */

/* proxy-wasm ABI v0.2.1 WasmResult values (edgegw/wasm/abi.py Status). */
enum { ST_OK = 0, ST_BAD_ARGUMENT = 2, ST_CAS_MISMATCH = 8, ST_INTERNAL_FAILURE = 10 };

typedef struct {
    uint64_t magic;
    uint32_t layout;
    uint32_t nslots;
    uint64_t max_keys;
    uint64_t max_bytes; /* bound on live record bytes */
    uint64_t heap_size;
    uint64_t total_size;
    pthread_mutex_t mutex;
    /* under mutex */
    uint64_t top;
    uint64_t live;
    uint64_t keys;
    uint32_t cas;
    uint32_t compacting;
    uint64_t recoveries;
} Header;

typedef struct {
    uint64_t hash;
    uint64_t off; /* 1 + heap offset; 0 = empty */
} Slot;

typedef struct {
    uint32_t slot;
    uint32_t cas;
    uint32_t ns;
    uint32_t klen;
    uint32_t vlen;
    uint32_t pad;
} Rec;

#define HDR_SIZE ((sizeof(Header) + 63) & ~(size_t)63)

static inline uint64_t rec_size(uint64_t klen, uint64_t vlen) {
    return (sizeof(Rec) + klen + vlen + 7) & ~(uint64_t)7;
}

typedef struct {
    PyObject_HEAD
    Header *h;
    Slot *slots;
    uint8_t *heap;
    size_t size;
} Table;

static inline Rec *rec_at(Table *t, uint64_t off1) { return (Rec *)(t->heap + off1 - 1); }

static uint64_t hash_key(uint32_t ns, const uint8_t *k, size_t n) {
    uint64_t x = 0xcbf29ce484222325ULL ^ ns; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        x ^= k[i];
        x *= 0x100000001b3ULL;
    }
    return x ? x : 1;
}

/* The slot holding (ns, key), or -(empty slot + 1) where it would go. */
static int64_t find(Table *t, uint64_t hv, uint32_t ns, const uint8_t *k, uint32_t n) {
    uint64_t mask = t->h->nslots - 1;
    for (uint64_t i = hv & mask;; i = (i + 1) & mask) {
        Slot *s = &t->slots[i];
        if (!s->off)
            return -(int64_t)i - 1;
        if (s->hash == hv) {
            Rec *r = rec_at(t, s->off);
            if (r->ns == ns && r->klen == n && memcmp(r + 1, k, n) == 0)
                return (int64_t)i;
        }
    }
}

static void reset(Header *h, Slot *slots) {
    memset(slots, 0, (size_t)h->nslots * sizeof(Slot));
    h->top = h->live = h->keys = 0;
    h->compacting = 0;
}

/* After EOWNERDEAD: make the counters agree with the slots again. */
static void recover(Table *t) {
    Header *h = t->h;
    h->recoveries++;
    if (h->compacting) { /* records may be half moved: nothing is trustworthy */
        reset(h, t->slots);
        return;
    }
    uint64_t live = 0, keys = 0;
    for (uint32_t i = 0; i < h->nslots; i++) {
        if (!t->slots[i].off)
            continue;
        Rec *r = rec_at(t, t->slots[i].off);
        live += rec_size(r->klen, r->vlen);
        keys++;
    }
    h->live = live;
    h->keys = keys;
}

static int lock(Table *t) {
    int rc = pthread_mutex_lock(&t->h->mutex);
    if (rc == EOWNERDEAD) {
        recover(t);
        pthread_mutex_consistent(&t->h->mutex);
        rc = 0;
    }
    if (rc) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void unlock(Table *t) { pthread_mutex_unlock(&t->h->mutex); }

static void compact(Table *t) {
    Header *h = t->h;
    h->compacting = 1;
    uint64_t rd = 0, wr = 0;
    while (rd < h->top) {
        Rec *r = (Rec *)(t->heap + rd);
        uint64_t size = rec_size(r->klen, r->vlen);
        if (r->slot < h->nslots && t->slots[r->slot].off == rd + 1) {
            if (wr != rd)
                memmove(t->heap + wr, r, size);
            t->slots[((Rec *)(t->heap + wr))->slot].off = wr + 1;
            wr += size;
        }
        rd += size;
    }
    h->top = wr;
    h->compacting = 0;
}

/* cas: 0 sets unconditionally, -1 only if absent, else only if the entry's cas is it. */
static int put(Table *t, uint32_t ns, const uint8_t *k, Py_ssize_t klen, const uint8_t *v,
               Py_ssize_t vlen, long long cas) {
    Header *h = t->h;
    if (klen > MAX_KEY)
        return ST_BAD_ARGUMENT;
    uint64_t need = rec_size((uint64_t)klen, (uint64_t)vlen);
    if (need > h->max_bytes)
        return ST_INTERNAL_FAILURE;
    uint64_t hv = hash_key(ns, k, (size_t)klen);
    int64_t i = find(t, hv, ns, k, (uint32_t)klen);
    Rec *old = i >= 0 ? rec_at(t, t->slots[i].off) : NULL;
    if (cas == -1 ? old != NULL : cas != 0 && (old == NULL || old->cas != (uint32_t)cas))
        return ST_CAS_MISMATCH;
    uint64_t freed = old ? rec_size(old->klen, old->vlen) : 0;
    if (!old && h->keys >= h->max_keys)
        return ST_INTERNAL_FAILURE;
    if (h->live - freed + need > h->max_bytes)
        return ST_INTERNAL_FAILURE;
    if (h->top + need > h->heap_size) {
        compact(t); /* frees at least heap_size - max_bytes: enough, see above */
        if (h->top + need > h->heap_size)
            return ST_INTERNAL_FAILURE;
        old = i >= 0 ? rec_at(t, t->slots[i].off) : NULL;
    }
    uint32_t slot = (uint32_t)(i >= 0 ? i : -i - 1);
    uint64_t off = h->top;
    Rec *r = (Rec *)(t->heap + off);
    if (++h->cas == 0)
        h->cas = 1;
    r->slot = slot;
    r->cas = h->cas;
    r->ns = ns;
    r->klen = (uint32_t)klen;
    r->vlen = (uint32_t)vlen;
    r->pad = 0;
    memcpy(r + 1, k, (size_t)klen);
    memcpy((uint8_t *)(r + 1) + klen, v, (size_t)vlen);
    h->top = off + need;
    if (!old) {
        t->slots[slot].hash = hv;
        h->keys++;
    }
    t->slots[slot].off = off + 1; /* the commit: a crash before it leaves garbage only */
    h->live = h->live - freed + need;
    return ST_OK;
}

/* ---- Python ---------------------------------------------------------------------------- */

static int map_file(Table *self, int fd, size_t size, int create) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   fd >= 0 ? MAP_SHARED : MAP_SHARED | MAP_ANONYMOUS, fd, 0);
    if (p == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->h = p;
    self->size = size;
    (void)create;
    return 0;
}

static void set_views(Table *self) {
    self->slots = (Slot *)((uint8_t *)self->h + HDR_SIZE);
    self->heap = (uint8_t *)(self->slots + self->h->nslots);
}

static int init_header(Table *self, uint32_t nslots, uint64_t max_keys, uint64_t max_bytes,
                       uint64_t heap_size, size_t total) {
    Header *h = self->h;
    memset(h, 0, sizeof(Header));
    h->layout = LAYOUT;
    h->nslots = nslots;
    h->max_keys = max_keys;
    h->max_bytes = max_bytes;
    h->heap_size = heap_size;
    h->total_size = total;
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (!rc)
        rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutex_init(&h->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    set_views(self);
    __atomic_store_n(&h->magic, MAGIC, __ATOMIC_RELEASE);
    return 0;
}

static int Table_init(Table *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "max_bytes", "max_keys", "create", NULL};
    PyObject *path_obj = Py_None;
    unsigned long long max_bytes = 64ULL << 20, max_keys = 100000;
    int create = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OKKp", kwlist, &path_obj, &max_bytes,
                                     &max_keys, &create))
        return -1;
    if (self->h) {
        PyErr_SetString(PyExc_RuntimeError, "Table already initialised");
        return -1;
    }
    if (max_keys < 1 || max_keys > (1ULL << 30) || max_bytes < 1024 || max_bytes > (1ULL << 40)) {
        PyErr_SetString(PyExc_ValueError, "max_keys must be 1..2^30, max_bytes 1KiB..1TiB");
        return -1;
    }
    uint64_t nslots = 2;
    while (nslots < 2 * max_keys)
        nslots <<= 1;
    uint64_t heap = (max_bytes + max_bytes / 4 + 7) & ~(uint64_t)7;
    size_t total = HDR_SIZE + nslots * sizeof(Slot) + heap;

    int fd = -1;
    if (path_obj != Py_None) {
        PyObject *bytes_path = NULL;
        if (!PyUnicode_FSConverter(path_obj, &bytes_path))
            return -1;
        const char *path = PyBytes_AS_STRING(bytes_path);
        fd = create ? open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
                    : open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_obj);
            Py_DECREF(bytes_path);
            return -1;
        }
        Py_DECREF(bytes_path);
        if (create) {
            if (ftruncate(fd, (off_t)total) != 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                close(fd);
                return -1;
            }
        } else {
            struct stat st;
            Header probe;
            if (fstat(fd, &st) != 0 || pread(fd, &probe, sizeof probe, 0) != sizeof probe) {
                PyErr_SetFromErrno(PyExc_OSError);
                close(fd);
                return -1;
            }
            if (probe.magic != MAGIC || probe.layout != LAYOUT ||
                probe.total_size != (uint64_t)st.st_size) {
                PyErr_Format(PyExc_ValueError, "%R is not an edgegw shared data table",
                             path_obj);
                close(fd);
                return -1;
            }
            total = (size_t)st.st_size;
        }
    }
    int rc = map_file(self, fd, total, create);
    if (fd >= 0)
        close(fd); /* the mapping keeps the file */
    if (rc)
        return -1;
    if (fd < 0 || create)
        return init_header(self, (uint32_t)nslots, max_keys, max_bytes, heap, total);
    set_views(self);
    return 0;
}

static void Table_dealloc(Table *self) {
    if (self->h)
        munmap(self->h, self->size);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *do_get(Table *self, uint32_t ns, Py_buffer *key) {
    if (key->len > MAX_KEY)
        Py_RETURN_NONE;
    uint64_t hv = hash_key(ns, key->buf, (size_t)key->len);
    if (lock(self))
        return NULL;
    int64_t i = find(self, hv, ns, key->buf, (uint32_t)key->len);
    PyObject *value = NULL;
    uint32_t cas = 0;
    if (i >= 0) {
        Rec *r = rec_at(self, self->slots[i].off);
        cas = r->cas;
        value = PyBytes_FromStringAndSize((const char *)(r + 1) + r->klen, r->vlen);
    }
    unlock(self);
    if (i < 0)
        Py_RETURN_NONE;
    if (!value)
        return NULL;
    PyObject *out = PyTuple_New(2), *num = PyLong_FromUnsignedLong(cas);
    if (!out || !num) {
        Py_XDECREF(out);
        Py_XDECREF(num);
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, value);
    PyTuple_SET_ITEM(out, 1, num);
    return out;
}

static PyObject *do_set(Table *self, uint32_t ns, Py_buffer *key, Py_buffer *value,
                        long long cas) {
    if (cas < -1 || cas > 0xffffffffLL) {
        PyErr_SetString(PyExc_ValueError, "cas must be -1 (absent), 0 (any) or a u32");
        return NULL;
    }
    if (lock(self))
        return NULL;
    int st = put(self, ns, key->buf, key->len, value->buf, value->len, cas);
    unlock(self);
    return PyLong_FromLong(st);
}

static PyObject *Table_get(Table *self, PyObject *arg) {
    Py_buffer key;
    if (PyObject_GetBuffer(arg, &key, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = do_get(self, 0, &key);
    PyBuffer_Release(&key);
    return out;
}

static PyObject *Table_set(Table *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "set(key, value, cas)");
        return NULL;
    }
    long long cas = PyLong_AsLongLong(args[2]);
    if (cas == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer key, value;
    if (PyObject_GetBuffer(args[0], &key, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &value, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&key);
        return NULL;
    }
    PyObject *out = do_set(self, 0, &key, &value, cas);
    PyBuffer_Release(&key);
    PyBuffer_Release(&value);
    return out;
}

static PyObject *Table_nsget(Table *self, PyObject *args) {
    unsigned int ns;
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "Iy*", &ns, &key))
        return NULL;
    PyObject *out = do_get(self, ns, &key);
    PyBuffer_Release(&key);
    return out;
}

static PyObject *Table_nsset(Table *self, PyObject *args) {
    unsigned int ns;
    long long cas;
    Py_buffer key, value;
    if (!PyArg_ParseTuple(args, "Iy*y*L", &ns, &key, &value, &cas))
        return NULL;
    PyObject *out = do_set(self, ns, &key, &value, cas);
    PyBuffer_Release(&key);
    PyBuffer_Release(&value);
    return out;
}

static PyObject *Table_stats(Table *self, PyObject *Py_UNUSED(ignored)) {
    if (lock(self))
        return NULL;
    Header *h = self->h;
    PyObject *out = Py_BuildValue("{sKsKsKsKsKsK}", "keys", h->keys, "bytes", h->live,
                                  "max_keys", h->max_keys, "max_bytes", h->max_bytes,
                                  "heap_top", h->top, "recoveries", h->recoveries);
    unlock(self);
    return out;
}

static PyMethodDef Table_methods[] = {
    {"get", (PyCFunction)Table_get, METH_O, "get(key) -> (value, cas) | None"},
    {"set", (PyCFunction)(void (*)(void))Table_set, METH_FASTCALL,
     "set(key, value, cas) -> status"},
    {"nsget", (PyCFunction)Table_nsget, METH_VARARGS, "nsget(ns, key)"},
    {"nsset", (PyCFunction)Table_nsset, METH_VARARGS, "nsset(ns, key, value, cas)"},
    {"stats", (PyCFunction)Table_stats, METH_NOARGS, "counters of the table"},
    {NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgegw.wasm._native.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Table_init,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_doc = "A shared data table in a shared mapping (see the module comment).",
};

int native_shm_add(PyObject *module) {
    if (PyType_Ready(&TableType) < 0 ||
        PyModule_AddObjectRef(module, "Table", (PyObject *)&TableType) < 0 ||
        PyModule_AddIntConstant(module, "MUTEX_OFFSET", (long)offsetof(Header, mutex)) < 0 ||
        PyModule_AddIntConstant(module, "MAX_KEY", MAX_KEY) < 0)
        return -1;
    return 0;
}
