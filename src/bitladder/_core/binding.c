/* The Python binding of the core: argument parsing, buffer-size checks, the GIL released around each kernel.
 * It does no work of its own. Decoders return the core's status code (0 or negative); encoders return bytes,
 * or the status code. Python (bitladder/codecs/native.py) turns codes into typed errors. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "bl.h"

static int width_of(int dtype) { return dtype == BL_F32 ? 4 : 2; }

/* Common trailing arguments: dtype, inner, max_code, begin, count, columns. */
#define BLOCK_FORMAT "iiiKKK"
#define BLOCK_ARGS(b) &(b).dtype, &(b).inner, &(b).max_code, &(b).begin, &(b).count, &(b).columns

static int check_size(Py_buffer *buf, uint64_t need, const char *what) {
    if ((uint64_t)buf->len < need) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, needs %llu", what, buf->len, (unsigned long long)need);
        return -1;
    }
    return 0;
}

static int check_block_args(bl_block *b) {
    if ((b->dtype != BL_F32 && b->dtype != BL_F16 && b->dtype != BL_BF16) || !b->columns) {
        PyErr_SetString(PyExc_ValueError, "bad block description");
        return -1;
    }
    return 0;
}

static uint64_t rows_end(const bl_block *b) { return b->begin / b->columns + bl_block_rows(b); }

static PyObject *finish_encode(int64_t n, PyObject *out) {
    if (n < 0) { Py_DECREF(out); return PyLong_FromLongLong(n); }
    if (_PyBytes_Resize(&out, (Py_ssize_t)n) < 0) return NULL;
    return out;
}

static PyObject *py_scales(PyObject *self, PyObject *args) {
    Py_buffer src, out;
    bl_block b = {0};
    if (!PyArg_ParseTuple(args, "y*w*" BLOCK_FORMAT, &src, &out, BLOCK_ARGS(b))) return NULL;
    int rc = 0;
    if (check_block_args(&b) || check_size(&src, b.count * (uint64_t)width_of(b.dtype), "source") ||
        check_size(&out, rows_end(&b) * 2, "scales")) rc = 1;
    if (!rc) { Py_BEGIN_ALLOW_THREADS rc = bl_scales(&b, src.buf, out.buf); Py_END_ALLOW_THREADS }
    PyBuffer_Release(&src); PyBuffer_Release(&out);
    if (rc == 1) return NULL;
    return PyLong_FromLong(rc);
}

/* encode(kind, src, scales, a, c, block...) for kind in int / intint / refine / half. */
static PyObject *py_encode(PyObject *self, PyObject *args) {
    const char *kind;
    Py_buffer src, scales;
    int a, c;
    bl_block b = {0};
    if (!PyArg_ParseTuple(args, "sy*y*ii" BLOCK_FORMAT, &kind, &src, &scales, &a, &c, BLOCK_ARGS(b))) return NULL;
    PyObject *out = NULL;
    int64_t n = BL_E_ARGUMENT;
    int scaled = strcmp(kind, "half") != 0 && !(strcmp(kind, "refine") == 0 && a == BL_HALF_TO_EXACT);
    if (check_block_args(&b) || check_size(&src, b.count * (uint64_t)width_of(b.dtype), "source") ||
        (scaled && check_size(&scales, rows_end(&b) * 2, "scales"))) goto fail;
    size_t cap = bl_bound(&b);
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (!out) goto fail;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    const uint16_t *s = scales.buf;
    Py_BEGIN_ALLOW_THREADS
    if (!strcmp(kind, "int")) n = bl_int_encode(&b, a, src.buf, s, o, cap);
    else if (!strcmp(kind, "intint")) n = bl_intint_encode(&b, a, c, src.buf, s, o, cap);
    else if (!strcmp(kind, "refine")) n = bl_refine_encode(&b, a, src.buf, s, o, cap);
    else if (!strcmp(kind, "half")) n = bl_half_encode(&b, src.buf, o, cap);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src); PyBuffer_Release(&scales);
    return finish_encode(n, out);
fail:
    PyBuffer_Release(&src); PyBuffer_Release(&scales);
    Py_XDECREF(out);
    return NULL;
}

/* decode(kind, payload, scales, held, out, a, c, block...): `scales` is written by kind "int" (the block's rows),
 * read by the others (the tensor's rows); "int" and "half" write `out` only. */
static PyObject *py_decode(PyObject *self, PyObject *args) {
    const char *kind;
    Py_buffer in, scales, held, out;
    int a, c;
    bl_block b = {0};
    if (!PyArg_ParseTuple(args, "sy*w*y*w*ii" BLOCK_FORMAT, &kind, &in, &scales, &held, &out, &a, &c, BLOCK_ARGS(b)))
        return NULL;
    int rc = BL_E_ARGUMENT, failed = 0;
    uint64_t bytes = b.count * (uint64_t)width_of(b.dtype);
    int is_int = !strcmp(kind, "int"), is_half = !strcmp(kind, "half");
    int scaled = !is_half && !(strcmp(kind, "refine") == 0 && a == BL_HALF_TO_EXACT);
    if (check_block_args(&b) || check_size(&out, bytes, "output") || (!is_int && !is_half && check_size(&held, bytes, "held")) ||
        (scaled && check_size(&scales, (is_int ? bl_block_rows(&b) : rows_end(&b)) * 2, "scales"))) failed = 1;
    if (!failed) {
        const uint8_t *p = in.buf;
        size_t len = (size_t)in.len;
        Py_BEGIN_ALLOW_THREADS
        if (is_int) rc = bl_int_decode(&b, a, p, len, scales.buf, out.buf);
        else if (!strcmp(kind, "intint")) rc = bl_intint_decode(&b, a, c, p, len, scales.buf, held.buf, out.buf);
        else if (!strcmp(kind, "refine")) rc = bl_refine_decode(&b, a, p, len, scales.buf, held.buf, out.buf);
        else if (is_half) rc = bl_half_decode(&b, p, len, out.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&in); PyBuffer_Release(&scales); PyBuffer_Release(&held); PyBuffer_Release(&out);
    if (failed) return NULL;
    return PyLong_FromLong(rc);
}

/* delta_encode(src, held, bits, after, block...) -> bytes | status */
static PyObject *py_delta_encode(PyObject *self, PyObject *args) {
    Py_buffer src, held;
    int bits, after;
    bl_block b = {0};
    if (!PyArg_ParseTuple(args, "y*y*ii" BLOCK_FORMAT, &src, &held, &bits, &after, BLOCK_ARGS(b))) return NULL;
    PyObject *out = NULL;
    int64_t n = BL_E_ARGUMENT;
    uint64_t bytes = b.count * (uint64_t)width_of(b.dtype);
    if (check_block_args(&b) || check_size(&src, bytes, "source") || check_size(&held, bytes, "held")) goto fail;
    size_t cap = bl_bound(&b);
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (!out) goto fail;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    n = bl_delta_encode(&b, bits, after, src.buf, held.buf, o, cap);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src); PyBuffer_Release(&held);
    return finish_encode(n, out);
fail:
    PyBuffer_Release(&src); PyBuffer_Release(&held);
    Py_XDECREF(out);
    return NULL;
}

/* delta_decode(payload, held, out, block...) -> status */
static PyObject *py_delta_decode(PyObject *self, PyObject *args) {
    Py_buffer in, held, out;
    bl_block b = {0};
    if (!PyArg_ParseTuple(args, "y*y*w*" BLOCK_FORMAT, &in, &held, &out, BLOCK_ARGS(b))) return NULL;
    int rc = BL_E_ARGUMENT, failed = 0;
    uint64_t bytes = b.count * (uint64_t)width_of(b.dtype);
    if (check_block_args(&b) || check_size(&out, bytes, "output") || check_size(&held, bytes, "held")) failed = 1;
    if (!failed) {
        const uint8_t *p = in.buf;
        size_t len = (size_t)in.len;
        Py_BEGIN_ALLOW_THREADS
        rc = bl_delta_decode(&b, p, len, held.buf, out.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&in); PyBuffer_Release(&held); PyBuffer_Release(&out);
    if (failed) return NULL;
    return PyLong_FromLong(rc);
}

static PyObject *py_path(PyObject *self, PyObject *args) {
    int path = -1;
    if (!PyArg_ParseTuple(args, "|i", &path)) return NULL;
    if (path >= 0 && bl_set_path(path) != BL_OK) {
        PyErr_Format(PyExc_ValueError, "kernel path %d is not available on this CPU", path);
        return NULL;
    }
    return PyLong_FromLong(bl_get_path());
}

static PyObject *py_path_available(PyObject *self, PyObject *args) {
    int path;
    if (!PyArg_ParseTuple(args, "i", &path)) return NULL;
    return PyBool_FromLong(bl_path_available(path));
}

static PyMethodDef methods[] = {
    {"scales", py_scales, METH_VARARGS, "scales(src, out, dtype, inner, max_code, begin, count, columns) -> status"},
    {"encode", py_encode, METH_VARARGS, "encode(kind, src, scales, a, c, block...) -> bytes | status"},
    {"decode", py_decode, METH_VARARGS, "decode(kind, payload, scales, held, out, a, c, block...) -> status"},
    {"delta_encode", py_delta_encode, METH_VARARGS, "delta_encode(src, held, bits, after, block...) -> bytes | status"},
    {"delta_decode", py_delta_decode, METH_VARARGS, "delta_decode(payload, held, out, block...) -> status"},
    {"path", py_path, METH_VARARGS, "path([p]) -> the kernel path in use (0 scalar, 1 AVX2, 2 AVX-512), after setting p"},
    {"path_available", py_path_available, METH_VARARGS, "path_available(p) -> whether this CPU runs path p"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bitladder._native", "The bitladder native core.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
