/* FastCGI name-value pairs to a dict, in C: the one loop of the FastCGI
 * fast path that Python cannot make cheap.
 *
 * nginx sends about twenty pairs per request; decoding them in Python
 * (fcgi_whole.decode_params_py) takes about half of the server's own
 * instructions per request.  This does the same work: each length is one
 * byte, or four with the high bit set; names and values become latin-1 str
 * (one character per byte, as flup gives them); a later pair with the same
 * name replaces an earlier one; a pair that runs past the end raises
 * ValueError.
 *
 * Built when a compiler is at hand (setup.py marks it optional); without it
 * fcgi_whole uses the Python version, which the tests hold to the same
 * results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static const char OVERRUN[] = "a name-value pair runs past the end of the parameters";

/* Read one length at *pos; return -1 when it runs past end. */
static Py_ssize_t
read_length(const unsigned char *data, Py_ssize_t end, Py_ssize_t *pos)
{
    Py_ssize_t at = *pos;
    if (at >= end)
        return -1;
    if (!(data[at] & 0x80)) {
        *pos = at + 1;
        return data[at];
    }
    if (end - at < 4)
        return -1;
    *pos = at + 4;
    return ((Py_ssize_t)(data[at] & 0x7F) << 24) | ((Py_ssize_t)data[at + 1] << 16)
           | ((Py_ssize_t)data[at + 2] << 8) | (Py_ssize_t)data[at + 3];
}

static PyObject *
decode_params(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *data = view.buf;
    const Py_ssize_t end = view.len;
    PyObject *params = PyDict_New();
    if (params == NULL)
        goto fail;

    Py_ssize_t pos = 0;
    while (pos < end) {
        Py_ssize_t name_len = read_length(data, end, &pos);
        Py_ssize_t value_len = name_len < 0 ? -1 : read_length(data, end, &pos);
        if (value_len < 0 || name_len > end - pos || value_len > end - pos - name_len) {
            PyErr_SetString(PyExc_ValueError, OVERRUN);
            goto fail;
        }
        PyObject *name = PyUnicode_DecodeLatin1((const char *)data + pos, name_len, NULL);
        if (name == NULL)
            goto fail;
        PyObject *value = PyUnicode_DecodeLatin1((const char *)data + pos + name_len,
                                                 value_len, NULL);
        if (value == NULL) {
            Py_DECREF(name);
            goto fail;
        }
        int failed = PyDict_SetItem(params, name, value) < 0;
        Py_DECREF(name);
        Py_DECREF(value);
        if (failed)
            goto fail;
        pos += name_len + value_len;
    }
    PyBuffer_Release(&view);
    return params;

fail:
    Py_XDECREF(params);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode_params", decode_params, METH_O,
     "decode_params(data) -> dict: FastCGI name-value pairs as latin-1 str."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "runfcgi_compat.servers._params",
    "FastCGI name-value pairs decoded in C (see fcgi_whole).", -1, methods,
};

PyMODINIT_FUNC
PyInit__params(void)
{
    return PyModule_Create(&module);
}
