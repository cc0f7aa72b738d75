/* The FastCGI fast path's byte work, in C: cutting a whole request from the
 * read buffer, decoding its name-value pairs, encoding a response head; and
 * socket reads and writes that never wait, so never let go of the lock.
 *
 * Each function here has exactly one Python twin that the tests hold to the
 * same results and errors (tests/unit/test_wire.py): parse_whole,
 * decode_params and stdout_record in fcgi_whole (``*_py``), encode_head and
 * check_start in base (``*_py``), fix_usual in environ (fix_usual_py), and
 * recv_now and send_now, whose twins are os.read and os.write, and
 * parent_death_signal in orphan (_parent_death_signal_py).  The module
 * is built when a compiler is at hand (setup.py marks it optional) and the
 * twins run without it.  In Python these loops were most of the server's
 * own instructions per request (bench/PROFILE.rst).
 *
 * Portable POSIX C: nothing here is Linux's own but prctl(), behind
 * __linux__.  Flags some systems lack are tested for (MSG_NOSIGNAL,
 * MSG_DONTWAIT), and tests/unit/test_wire.py compiles this file with
 * Linux's own headers hidden.
 *
 * Names and values: nginx sends about twenty pairs per request, nearly the
 * same ones every time.  The usual CGI names are made once, interned (the
 * very objects Django's own string constants are, so its lookups match on
 * identity); only this fixed list, so a client sending made-up headers
 * cannot grow the process.  Values are made new for every request and
 * nothing here keeps one: a request's credentials, cookies, URIs and
 * referrers must not outlive it.  (Remembering the last value of each name
 * saved 3,700 instructions per request of 500,000: docs/performance.rst.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

static const char OVERRUN[] = "a name-value pair runs past the end of the parameters";

/* -- known names ---------------------------------------------------------------- */

static const char *const KNOWN[] = {
    "REQUEST_METHOD", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH", "SCRIPT_NAME",
    "SCRIPT_FILENAME", "PATH_INFO", "PATH_TRANSLATED", "REQUEST_URI", "DOCUMENT_URI",
    "DOCUMENT_ROOT", "SERVER_PROTOCOL", "REQUEST_SCHEME", "HTTPS", "GATEWAY_INTERFACE",
    "SERVER_SOFTWARE", "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_USER", "REMOTE_HOST",
    "AUTH_TYPE", "SERVER_ADDR", "SERVER_PORT", "SERVER_NAME", "REDIRECT_STATUS",
    "REDIRECT_URL", "SCRIPT_URL", "SCRIPT_URI", "HTTP_HOST", "HTTP_USER_AGENT",
    "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING", "HTTP_ACCEPT_LANGUAGE", "HTTP_CONNECTION",
    "HTTP_COOKIE", "HTTP_REFERER", "HTTP_ORIGIN", "HTTP_AUTHORIZATION",
    "HTTP_CACHE_CONTROL", "HTTP_PRAGMA", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
    "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
    "HTTP_X_REAL_IP", "HTTP_X_REQUESTED_WITH", "HTTP_UPGRADE_INSECURE_REQUESTS",
    "HTTP_SEC_FETCH_SITE", "HTTP_SEC_FETCH_MODE", "HTTP_SEC_FETCH_DEST",
    "HTTP_SEC_FETCH_USER", "HTTP_DNT", "HTTP_TE", "HTTP_CONTENT_TYPE",
    "HTTP_CONTENT_LENGTH",
};
#define N_KNOWN (sizeof(KNOWN) / sizeof(KNOWN[0]))

#define SLOTS 256 /* a power of two, well above N_KNOWN */

static PyObject *slots[SLOTS]; /* interned names; NULL: an empty slot */
static int known_ready;

static size_t
slot_of(const unsigned char *data, Py_ssize_t len)
{
    return ((size_t)len * 33 + data[0] * 7 + data[len - 1] * 13 + data[len / 2]) & (SLOTS - 1);
}

/* The interned name with these bytes, borrowed; NULL: not a known name. */
static PyObject *
find_known(const unsigned char *data, Py_ssize_t len)
{
    if (len == 0)
        return NULL;
    for (size_t i = slot_of(data, len);; i = (i + 1) & (SLOTS - 1)) {
        PyObject *name = slots[i];
        if (name == NULL)
            return NULL;
        if (PyUnicode_GET_LENGTH(name) == len
            && memcmp(PyUnicode_1BYTE_DATA(name), data, len) == 0)
            return name;
    }
}

static int
init_known(void)
{
    for (size_t n = 0; n < N_KNOWN; n++) {
        PyObject *name = PyUnicode_InternFromString(KNOWN[n]);
        if (name == NULL)
            return -1;
        const unsigned char *data = PyUnicode_1BYTE_DATA(name);
        size_t i = slot_of(data, PyUnicode_GET_LENGTH(name));
        while (slots[i] != NULL)
            i = (i + 1) & (SLOTS - 1);
        slots[i] = name;
    }
    return 0;
}

static PyObject *
latin1(const unsigned char *data, Py_ssize_t len)
{
    return PyUnicode_DecodeLatin1((const char *)data, len, NULL);
}

/* -- name-value pairs ------------------------------------------------------------- */

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

/* Decode pairs into a new dict; NULL with ValueError when one runs past end.
 * Each length is one byte, or four with the high bit set; names and values
 * become latin-1 str (one character per byte, as flup gives them); a later
 * pair with the same name replaces an earlier one. */
static PyObject *
decode(const unsigned char *data, Py_ssize_t end)
{
    PyObject *params = PyDict_New();
    if (params == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    while (pos < end) {
        Py_ssize_t name_len = read_length(data, end, &pos);
        Py_ssize_t value_len = name_len < 0 ? -1 : read_length(data, end, &pos);
        if (value_len < 0 || name_len > end - pos || value_len > end - pos - name_len) {
            PyErr_SetString(PyExc_ValueError, OVERRUN);
            goto fail;
        }
        PyObject *name = find_known(data + pos, name_len);
        if (name != NULL)
            Py_INCREF(name);
        else if ((name = latin1(data + pos, name_len)) == NULL)
            goto fail;
        PyObject *value = latin1(data + pos + name_len, value_len);
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
    return params;

fail:
    Py_DECREF(params);
    return NULL;
}

static PyObject *
decode_params(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *params = decode(view.buf, view.len);
    PyBuffer_Release(&view);
    return params;
}

/* -- a whole request ------------------------------------------------------------- */

enum { HEADER_LEN = 8, BEGIN_REQUEST = 1, PARAMS = 4, STDIN = 5, RESPONDER = 1 };

typedef struct {
    unsigned char kind;
    unsigned int request_id, length, padding;
} Header;

static void
read_header(const unsigned char *at, Header *h)
{
    h->kind = at[1];
    h->request_id = (at[2] << 8) | at[3];
    h->length = (at[4] << 8) | at[5];
    h->padding = at[6];
}

/* The content of the records of one stream, from first, as one block: a
 * pointer into the buffer when there is one record, else copied into
 * *copy (PyMem_Malloc'd, for the caller to free). */
typedef struct {
    Py_ssize_t first, records, total;
} Stream;

static const unsigned char *
join_stream(const unsigned char *buf, const Stream *s, unsigned char **copy)
{
    *copy = NULL;
    if (s->records <= 1)
        return buf + s->first + HEADER_LEN;
    unsigned char *out = PyMem_Malloc(s->total ? s->total : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t at = s->first, filled = 0;
    for (Py_ssize_t n = 0; n < s->records; n++) {
        Header h;
        read_header(buf + at, &h);
        memcpy(out + filled, buf + at + HEADER_LEN, h.length);
        filled += h.length;
        at += HEADER_LEN + h.length + h.padding;
    }
    *copy = out;
    return out;
}

/* Walk one stream's records from *pos to its empty record; 0: not all here
 * or not this stream (then the request is not simple and whole). */
static int
scan_stream(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos, unsigned char kind,
            unsigned int request_id, Stream *s)
{
    s->first = *pos;
    s->records = s->total = 0;
    for (;;) {
        if (end - *pos < HEADER_LEN)
            return 0;
        Header h;
        read_header(buf + *pos, &h);
        if (h.kind != kind || h.request_id != request_id)
            return 0;
        Py_ssize_t next = *pos + HEADER_LEN + h.length + h.padding;
        if (next > end)
            return 0;
        *pos = next;
        if (h.length == 0)
            return 1;
        s->records++;
        s->total += h.length;
    }
}

static PyObject *
parse_whole(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse_whole(buf, pos)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = view.buf;
    const Py_ssize_t end = view.len;
    PyObject *result = NULL;
    unsigned char *params_copy = NULL, *body_copy = NULL;

    if (pos < 0 || end - pos < 2 * HEADER_LEN)
        goto none;
    Header begin;
    read_header(buf + pos, &begin);
    if (buf[pos] != 1 || begin.kind != BEGIN_REQUEST || begin.length != 8)
        goto none;
    const unsigned char *body_of_begin = buf + pos + HEADER_LEN;
    if (((body_of_begin[0] << 8) | body_of_begin[1]) != RESPONDER)
        goto none;
    int flags = body_of_begin[2];
    pos += 2 * HEADER_LEN + begin.padding;

    Stream params, body;
    if (!scan_stream(buf, end, &pos, PARAMS, begin.request_id, &params)
        || !scan_stream(buf, end, &pos, STDIN, begin.request_id, &body))
        goto none;
    const unsigned char *pairs = join_stream(buf, &params, &params_copy);
    if (pairs == NULL)
        goto done;
    const unsigned char *body_data = join_stream(buf, &body, &body_copy);
    if (body_data == NULL)
        goto done;
    PyObject *decoded = decode(pairs, params.total);
    if (decoded == NULL)
        goto done;
    PyObject *body_bytes = PyBytes_FromStringAndSize((const char *)body_data, body.total);
    if (body_bytes == NULL) {
        Py_DECREF(decoded);
        goto done;
    }
    result = Py_BuildValue("(IiNNn)", begin.request_id, flags, decoded, body_bytes, pos);
    goto done;

none:
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(params_copy);
    PyMem_Free(body_copy);
    PyBuffer_Release(&view);
    return result;
}

/* -- a response head --------------------------------------------------------------- */

/* Append str piece's latin-1 bytes at *out (NULL: only count them in *size). */
static int
put(PyObject *piece, char **out, Py_ssize_t *size)
{
    if (!PyUnicode_Check(piece)) {
        PyErr_Format(PyExc_TypeError, "response head: expected str, got %.100s",
                     Py_TYPE(piece)->tp_name);
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(piece) < 0)
        return -1;
#endif
    if (PyUnicode_KIND(piece) != PyUnicode_1BYTE_KIND) {
        /* Beyond latin-1: the codec's own error, as in Python. */
        PyObject *encoded = PyUnicode_AsLatin1String(piece);
        Py_XDECREF(encoded);
        return -1;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(piece);
    if (*out != NULL) {
        memcpy(*out, PyUnicode_1BYTE_DATA(piece), len);
        *out += len;
    }
    *size += len;
    return 0;
}

static void
put_literal(const char *text, Py_ssize_t len, char **out, Py_ssize_t *size)
{
    if (*out != NULL) {
        memcpy(*out, text, len);
        *out += len;
    }
    *size += len;
}

/* Two passes over the same pieces: the first counts, the second copies. */
static int
write_head(PyObject *status, PyObject *headers, char **out, Py_ssize_t *size)
{
    put_literal("Status: ", 8, out, size);
    if (put(status, out, size) < 0)
        return -1;
    put_literal("\r\n", 2, out, size);
    Py_ssize_t count = PyList_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *header = PyList_GET_ITEM(headers, i);
        if (!PyTuple_Check(header) || PyTuple_GET_SIZE(header) != 2) {
            PyErr_SetString(PyExc_TypeError, "response head: headers are (name, value) tuples");
            return -1;
        }
        if (put(PyTuple_GET_ITEM(header, 0), out, size) < 0)
            return -1;
        put_literal(": ", 2, out, size);
        if (put(PyTuple_GET_ITEM(header, 1), out, size) < 0)
            return -1;
        put_literal("\r\n", 2, out, size);
    }
    put_literal("\r\n", 2, out, size);
    return 0;
}

static PyObject *
encode_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode_head(status, headers: list)");
        return NULL;
    }
    char *out = NULL;
    Py_ssize_t size = 0;
    if (write_head(args[0], args[1], &out, &size) < 0)
        return NULL;
    PyObject *head = PyBytes_FromStringAndSize(NULL, size);
    if (head == NULL)
        return NULL;
    out = PyBytes_AS_STRING(head);
    size = 0;
    if (write_head(args[0], args[1], &out, &size) < 0) {
        Py_DECREF(head);
        return NULL;
    }
    return head;
}

/* A whole FastCGI STDOUT record: its header, the response head, the first
 * body chunk and the padding, in one allocation.  None when they do not fit
 * in one record that needs no padding beyond 7 bytes (the caller frames
 * them in Python then). */
#define FCGI_STDOUT 6
#define MAX_CONTENT 65528

static PyObject *
stdout_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "stdout_record(request_id, status, headers: list, body)");
        return NULL;
    }
    long request_id = PyLong_AsLong(args[0]);
    if (request_id == -1 && PyErr_Occurred())
        return NULL;
    if (request_id < 0 || request_id > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "stdout_record: bad request id %ld", request_id);
        return NULL;
    }
    Py_buffer body;
    if (PyObject_GetBuffer(args[3], &body, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *record = NULL;
    char *out = NULL;
    Py_ssize_t head = 0;
    if (write_head(args[1], args[2], &out, &head) < 0)
        goto done;
    Py_ssize_t length = head + body.len;
    if (length > MAX_CONTENT) {
        record = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t padding = -length & 7;
    record = PyBytes_FromStringAndSize(NULL, 8 + length + padding);
    if (record == NULL)
        goto done;
    unsigned char *at = (unsigned char *)PyBytes_AS_STRING(record);
    at[0] = 1;
    at[1] = FCGI_STDOUT;
    at[2] = (unsigned char)(request_id >> 8);
    at[3] = (unsigned char)request_id;
    at[4] = (unsigned char)(length >> 8);
    at[5] = (unsigned char)length;
    at[6] = (unsigned char)padding;
    at[7] = 0;
    out = (char *)at + 8;
    head = 0;
    if (write_head(args[1], args[2], &out, &head) < 0) {
        Py_CLEAR(record);
        goto done;
    }
    memcpy(out, body.buf, body.len);
    memset(out + body.len, 0, padding);
done:
    PyBuffer_Release(&body);
    return record;
}

/* -- the environ's usual case ---------------------------------------------------
 *
 * environ.fix_environ's commonest outcome, without its Python steps: the
 * web server sent REQUEST_URI, a PATH_INFO, and a SCRIPT_NAME that with it
 * adds up to the URI's path, with nothing percent-encoded (nginx with
 * fastcgi_split_path_info or a PATH_INFO param, lighttpd, most set-ups).
 * Then the pair is kept, QUERY_STRING comes from the URI when missing, and
 * wsgi.url_scheme from HTTPS or REQUEST_SCHEME.  Anything else returns
 * False with the environ untouched, and the Python code decides (the twin:
 * environ.fix_usual_py). */

static PyObject *s_https, *s_request_scheme, *s_request_uri, *s_query_string, *s_script_name,
    *s_path_info, *s_url_scheme, *v_http, *v_https, *v_empty;

static int
init_environ_names(void)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_https, "HTTPS"}, {&s_request_scheme, "REQUEST_SCHEME"},
        {&s_request_uri, "REQUEST_URI"}, {&s_query_string, "QUERY_STRING"},
        {&s_script_name, "SCRIPT_NAME"}, {&s_path_info, "PATH_INFO"},
        {&s_url_scheme, "wsgi.url_scheme"}, {&v_http, "http"}, {&v_https, "https"},
        {&v_empty, ""},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    }
    return 0;
}

/* A str of one byte per character (what the decoder makes), else NULL. */
static const char *
narrow(PyObject *text, Py_ssize_t *len)
{
    if (!PyUnicode_CheckExact(text))
        return NULL;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        PyErr_Clear();
        return NULL;
    }
#endif
    if (PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        return NULL;
    *len = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_1BYTE_DATA(text);
}

/* text.lower() == word, for a lower-case ASCII word. */
static int
lower_is(const char *text, Py_ssize_t len, const char *word)
{
    Py_ssize_t n = (Py_ssize_t)strlen(word);
    if (len != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = text[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return 0;
    }
    return 1;
}

static PyObject *
fix_usual(PyObject *module, PyObject *environ)
{
    if (!PyDict_CheckExact(environ))
        Py_RETURN_FALSE;
    PyObject *uri = PyDict_GetItemWithError(environ, s_request_uri);
    PyObject *script = PyDict_GetItemWithError(environ, s_script_name);
    PyObject *path = PyDict_GetItemWithError(environ, s_path_info);
    PyObject *https = PyDict_GetItemWithError(environ, s_https);
    PyObject *scheme = https ? NULL : PyDict_GetItemWithError(environ, s_request_scheme);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t uri_len, script_len = 0, path_len, flag_len = 0;
    const char *uri_at, *script_at = "", *path_at, *flag_at = NULL;
    if (uri == NULL || path == NULL || (uri_at = narrow(uri, &uri_len)) == NULL
        || (path_at = narrow(path, &path_len)) == NULL || path_len == 0)
        Py_RETURN_FALSE;
    if (script != NULL && (script_at = narrow(script, &script_len)) == NULL)
        Py_RETURN_FALSE;
    PyObject *flag = https ? https : scheme;
    if (flag != NULL && (flag_at = narrow(flag, &flag_len)) == NULL)
        Py_RETURN_FALSE;
    const char *mark = memchr(uri_at, '?', uri_len);
    Py_ssize_t raw_len = mark ? mark - uri_at : uri_len;
    /* A SCRIPT_NAME of "/" is not the usual case: PEP 3333 wants "" (the
       general code in environ.py moves the slash to PATH_INFO). */
    if (memchr(uri_at, '%', raw_len) != NULL || script_len + path_len != raw_len
        || (script_len == 1 && script_at[0] == '/')
        || memcmp(script_at, uri_at, script_len) != 0
        || memcmp(path_at, uri_at + script_len, path_len) != 0)
        Py_RETURN_FALSE;

    int secure = 0;
    if (https != NULL)
        secure = lower_is(flag_at, flag_len, "on") || lower_is(flag_at, flag_len, "1");
    else if (scheme != NULL)
        secure = lower_is(flag_at, flag_len, "https");
    if (PyDict_SetItem(environ, s_url_scheme, secure ? v_https : v_http) < 0)
        return NULL;
    int has_query = PyDict_Contains(environ, s_query_string);
    if (has_query < 0)
        return NULL;
    if (!has_query) {
        PyObject *query = mark ? PyUnicode_Substring(uri, raw_len + 1, uri_len) : Py_NewRef(v_empty);
        if (query == NULL)
            return NULL;
        int failed = PyDict_SetItem(environ, s_query_string, query) < 0;
        Py_DECREF(query);
        if (failed)
            return NULL;
    }
    if (script_len == 0 && PyDict_SetItem(environ, s_script_name, v_empty) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* -- start_response's checks ---------------------------------------------------- */

/* The first three characters of a str are digits (str.isdigit's sense). */
static int
three_digits(PyObject *text)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t i = 0; i < 3; i++) {
        if (!Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, i)))
            return 0;
    }
    return 1;
}

static PyObject *
check_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "check_start(status, headers)");
        return NULL;
    }
    PyObject *status = args[0], *headers = args[1];
    if (PyUnicode_Check(status)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(status) < 0)
            return NULL;
#endif
    }
    if (!PyUnicode_Check(status) || PyUnicode_GET_LENGTH(status) < 4 || !three_digits(status)) {
        PyErr_Format(PyExc_AssertionError, "invalid WSGI status %R", status);
        return NULL;
    }
    if (!PyList_Check(headers)) {
        PyErr_SetString(PyExc_AssertionError, "WSGI response headers must be a list");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *header = PyList_GET_ITEM(headers, i);
        if (!PyTuple_Check(header) || PyTuple_GET_SIZE(header) != 2
                || !PyUnicode_Check(PyTuple_GET_ITEM(header, 0))
                || !PyUnicode_Check(PyTuple_GET_ITEM(header, 1))) {
            PyErr_Format(PyExc_AssertionError, "invalid WSGI header %R", header);
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* -- reads and writes that never wait ------------------------------------------------
 *
 * os.read and os.write release the interpreter lock around the system call,
 * even when it returns at once.  In the threaded server every release hands
 * the lock to another thread, and getting it back means waiting for that
 * thread's next release: with kept connections, three hand-offs per request
 * (the wait for the request, its read, the response's write), about
 * fourteen futex calls.  These two keep the lock: MSG_DONTWAIT makes each
 * call return at once, with the bytes there are or EAGAIN (BlockingIOError),
 * whatever the socket's blocking mode, and the caller waits (in poll, lock
 * released) only when there was nothing to do.
 *
 * POSIX (2008) has neither flag.  Without MSG_DONTWAIT the two are left
 * out, and base.py uses os.read and os.write.  Without MSG_NOSIGNAL (macOS)
 * nothing is lost: Python ignores SIGPIPE, so a closed peer is EPIPE. */

#ifdef MSG_DONTWAIT
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* The descriptor, the first of two arguments; -1 with an exception set. */
static int
fd_argument(PyObject *const *args, Py_ssize_t nargs, const char *usage)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: bad descriptor %ld", usage, fd);
        return -1;
    }
    return (int)fd;
}

/* After a failed recv/send: a signal handler's exception, or errno's. */
static PyObject *
call_failed(void)
{
    return PyErr_Occurred() ? NULL : PyErr_SetFromErrno(PyExc_OSError);
}

static PyObject *
recv_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd = fd_argument(args, nargs, "recv_now(fd, size)");
    if (fd < 0)
        return NULL;
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "recv_now: negative size");
        return NULL;
    }
    if (size == 0) /* As os.read: nothing asked, nothing read (not EAGAIN). */
        return PyBytes_FromStringAndSize(NULL, 0);
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL)
        return NULL;
    ssize_t got;
    do {
        got = recv(fd, PyBytes_AS_STRING(data), size, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    if (got < 0) {
        Py_DECREF(data);
        return call_failed();
    }
    if (got != size && _PyBytes_Resize(&data, got) < 0)
        return NULL;
    return data;
}

static PyObject *
send_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd = fd_argument(args, nargs, "send_now(fd, data)");
    if (fd < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ssize_t sent;
    do {
        sent = send(fd, view.buf, view.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    PyBuffer_Release(&view);
    if (sent < 0)
        return call_failed();
    return PyLong_FromSsize_t(sent);
}
#endif /* MSG_DONTWAIT */

/* -- the parent-death signal (orphan.py) ----------------------------------------- */

/* Here rather than through ctypes: importing ctypes and libffi in the prefork
 * master cost every server about 0.5 MiB of memory (bench/memory.py). */
static PyObject *
parent_death_signal(PyObject *module, PyObject *arg)
{
    long signum = PyLong_AsLong(arg);
    if (signum == -1 && PyErr_Occurred())
        return NULL;
    if (signum <= 0 || signum > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "parent_death_signal: not a signal number");
        return NULL;
    }
#ifdef PR_SET_PDEATHSIG
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)signum, 0UL, 0UL, 0UL) == 0)
        Py_RETURN_TRUE;
#endif
    Py_RETURN_FALSE;
}

/* -- the module ----------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"decode_params", decode_params, METH_O,
     "decode_params(data) -> dict: FastCGI name-value pairs as latin-1 str."},
    {"parse_whole", (PyCFunction)(void (*)(void))parse_whole, METH_FASTCALL,
     "parse_whole(buf, pos) -> (request_id, flags, params, body, next_pos) or None."},
    {"encode_head", (PyCFunction)(void (*)(void))encode_head, METH_FASTCALL,
     "encode_head(status, headers) -> bytes: a CGI response head, latin-1."},
    {"stdout_record", (PyCFunction)(void (*)(void))stdout_record, METH_FASTCALL,
     "stdout_record(request_id, status, headers, body) -> bytes: one FCGI_STDOUT record "
     "with the response head and body, or None when they need more than one."},
    {"check_start", (PyCFunction)(void (*)(void))check_start, METH_FASTCALL,
     "check_start(status, headers): AssertionError unless they are what WSGI allows."},
    {"fix_usual", fix_usual, METH_O,
     "fix_usual(environ) -> bool: environ.fix_environ's usual case done; False: not that case."},
    {"parent_death_signal", parent_death_signal, METH_O,
     "parent_death_signal(signum) -> bool: ask the kernel for signum when our parent "
     "dies (Linux's prctl); False where it cannot."},
#ifdef MSG_DONTWAIT
    {"recv_now", (PyCFunction)(void (*)(void))recv_now, METH_FASTCALL,
     "recv_now(fd, size) -> bytes: what a socket has, at once; BlockingIOError if nothing."},
    {"send_now", (PyCFunction)(void (*)(void))send_now, METH_FASTCALL,
     "send_now(fd, data) -> int: bytes a socket took, at once; BlockingIOError if none."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "runfcgi_compat.servers._wire",
    "The FastCGI fast path's byte work in C (see fcgi_whole).", -1, methods,
};

PyMODINIT_FUNC
PyInit__wire(void)
{
    if (!known_ready) {
        if (init_known() < 0 || init_environ_names() < 0)
            return NULL;
        known_ready = 1;
    }
    return PyModule_Create(&module);
}
