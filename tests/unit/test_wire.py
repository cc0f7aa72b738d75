"""The optional C module (servers/_wire.c): portable, with one Python twin per function.

* It compiles as a POSIX system other than Linux would see it.
* Each function it exports has exactly one Python twin, bound in its place
  when the module is missing or RUNFCGI_PURE_PYTHON=1 (servers/speedups.py
  decides, test_speedups.py checks); the twins are held to the same results by
  property tests: parse_whole, decode_params, stdout_record, encode_head
  and check_start in test_servers_fcgi_whole.py, fix_usual in
  test_environ.py, recv_now and send_now here, parent_death_signal in
  test_servers_orphan.py.
* No value of a request outlives the request in a cache.
* The portable mode (tests/portable/sitecustomize.py) really is on in its
  tox cell, and the C module really is there in the others.
"""
import os
import re
import select
import selectors
import socket
import subprocess
import sys
import sysconfig
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runfcgi_compat import client
from runfcgi_compat.servers import base, environ, fcgi_whole, orphan
from tests import modes

from .test_servers_protocols import fcgi_record

SOURCE = modes.REPO / "runfcgi_compat" / "servers" / "_wire.c"

# C function -> (the module that binds it, its Python twin there).
TWINS = {
    "parse_whole": (fcgi_whole, fcgi_whole.parse_whole_py),
    "decode_params": (fcgi_whole, fcgi_whole.decode_params_py),
    "stdout_record": (fcgi_whole, fcgi_whole.stdout_record_py),
    "encode_head": (base, base.encode_head_py),
    "check_start": (base, base.check_start_py),
    "fix_usual": (environ, environ.fix_usual_py),
    "recv_now": (base, os.read),
    "send_now": (base, os.write),
    "parent_death_signal": (orphan, orphan._parent_death_signal_py),
}


def test_every_c_function_has_one_python_twin_and_is_the_one_bound():
    wire = modes.wire()
    exported = {name for name in dir(wire) if not name.startswith("_")
                and callable(getattr(wire, name))}
    assert exported == set(TWINS)
    for name, (module, _) in TWINS.items():
        assert getattr(module, name) is getattr(wire, name), name


# -- the portable mode ------------------------------------------------------------


@pytest.mark.skipif(not modes.PORTABLE, reason="only in the portable mode")
def test_the_portable_mode_is_on():
    assert not hasattr(select, "epoll") and not hasattr(select, "EPOLLIN")
    assert not hasattr(os, "eventfd") and not hasattr(os, "EFD_CLOEXEC")
    assert selectors.DefaultSelector is selectors.PollSelector
    with pytest.raises(ImportError):
        from runfcgi_compat.servers import _wire  # noqa: F401
    for name, (module, twin) in TWINS.items():
        assert getattr(module, name) is twin, name
    # The servers the tests start get the same Python (sitecustomize in the
    # environment's site-packages, whatever PYTHONPATH they are given).
    code = "import select, os; print(hasattr(select, 'epoll'), hasattr(os, 'eventfd'))"
    seen = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH="/"),
                          capture_output=True, text=True, check=True).stdout
    assert seen.split() == ["False", "False"]


# -- portable C -------------------------------------------------------------------

# Linux's own system-call headers; in the check each is a stub that stops
# the compile, whoever includes it (the module or Python.h).  (Not the
# kernel's linux/*.h: glibc's own errno.h and limits.h read those.)
LINUX_ONLY = ["sys/epoll.h", "sys/eventfd.h", "sys/signalfd.h", "sys/timerfd.h",
              "sys/inotify.h", "sys/prctl.h", "sys/sendfile.h", "sys/sysinfo.h",
              "sys/fanotify.h", "sys/pidfd.h"]
# What _wire.c may include itself: Python's header and POSIX's.
POSIX_HEADERS = {"Python.h", "errno.h", "limits.h", "string.h", "stddef.h", "stdint.h",
                 "stdlib.h", "unistd.h", "fcntl.h", "poll.h", "sys/socket.h", "sys/types.h",
                 "sys/uio.h", "netinet/in.h"}
# Socket flags to take away from <sys/socket.h>: "macos" lacks MSG_NOSIGNAL,
# "posix" is POSIX 2008, which has neither.
HIDDEN_FLAGS = {"macos": ["MSG_NOSIGNAL"], "posix": ["MSG_NOSIGNAL", "MSG_DONTWAIT"]}


def compile_portably(source, tmp_path, hidden_flags):
    """Compile ``source`` as on a POSIX system without Linux's own parts.

    ``cc -std=c11 -D_POSIX_C_SOURCE=200809L -Werror``, with ``__linux__``
    and its aliases undefined, every header of LINUX_ONLY a stub that
    fails, and ``hidden_flags`` taken out of <sys/socket.h>.  Return the
    compiler's CompletedProcess.
    """
    cc = modes.c_compiler()
    if cc is None:
        modes.skip_or_fail("no C compiler to check that _wire.c is portable")
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        modes.skip_or_fail(f"no Python.h in {include} (the Python headers are missing)")
    stubs = tmp_path / "stubs"
    for header in LINUX_ONLY:
        (stubs / header).parent.mkdir(parents=True, exist_ok=True)
        (stubs / header).write_text(f'#error "<{header}> is Linux only"\n')
    (stubs / "sys" / "socket.h").write_text(
        "#include_next <sys/socket.h>\n" + "".join(f"#undef {f}\n" for f in hidden_flags))
    return subprocess.run(
        [*cc, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Werror", "-Wall", "-fPIC",
         "-U__linux__", "-U__linux", "-U__gnu_linux__", "-Ulinux",
         f"-I{stubs}", f"-I{include}", f"-I{sysconfig.get_paths()['platinclude']}",
         "-c", str(source), "-o", str(tmp_path / "wire.o")],
        capture_output=True, text=True)


@pytest.mark.parametrize("system", sorted(HIDDEN_FLAGS))
def test_the_c_module_compiles_without_linux(tmp_path, system):
    compiled = compile_portably(SOURCE, tmp_path, HIDDEN_FLAGS[system])
    assert compiled.returncode == 0, compiled.stderr
    assert (tmp_path / "wire.o").stat().st_size > 0


def test_the_c_module_includes_only_posix_headers():
    # Linux's own headers only inside "#ifdef __linux__" (compiled out elsewhere).
    text = SOURCE.read_text()
    guarded = re.findall(r'^#ifdef __linux__\n(.*?)^#endif', text, re.M | re.S)
    linux = re.findall(r'#\s*include\s*[<"]([^>"]+)[>"]', "".join(guarded))
    included = re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', text, re.M)
    assert included and set(included) - set(linux) <= POSIX_HEADERS
    assert linux == ["sys/prctl.h"]


def test_the_portable_compile_rejects_a_linux_header(tmp_path):
    # The check can fail: the module as it was, with <sys/epoll.h>.
    source = tmp_path / "epoll.c"
    source.write_text("#include <Python.h>\n#include <sys/epoll.h>\n"
                      "int ready(int fd) { return epoll_create1(0) + fd; }\n")
    compiled = compile_portably(source, tmp_path, [])
    assert compiled.returncode != 0 and "is Linux only" in compiled.stderr


# -- no request's values in a cache --------------------------------------------------

# The names the C module makes once (its KNOWN list): a remembered value
# would hang off one of them.
KNOWN = re.findall(r'"([A-Z_]+)"', re.search(
    r"KNOWN\[\] = \{(.*?)\};", SOURCE.read_text(), re.S).group(1))
UNKNOWN = "HTTP_X_MADE_UP"  # Never interned: the reference count to compare with.

PARSERS = [
    pytest.param(lambda pairs: fcgi_whole.decode_params_py(pairs), id="decode-python"),
    pytest.param(lambda pairs: modes.wire().decode_params(pairs), id="decode-c"),
    pytest.param(lambda pairs: fcgi_whole.parse_whole_py(whole(pairs), 0)[2],
                 id="parse-python"),
    pytest.param(lambda pairs: modes.wire().parse_whole(whole(pairs), 0)[2], id="parse-c"),
]


def whole(pairs):
    return (fcgi_record(1, b"\0\1\0\0\0\0\0\0") + fcgi_record(4, pairs) + fcgi_record(4)
            + fcgi_record(5))


def extra_references(parse, names):
    """Parse a request with a unique value per name, drop the result, and
    return {name: references to its value beyond those to UNKNOWN's}."""
    values = {name: f"{name}={uuid.uuid4().hex}" for name in [*names, UNKNOWN]}
    params = parse(client.encode_pairs(values))
    got = {name: params[name] for name in values}
    assert got == values
    del params
    counts = {name: sys.getrefcount(value) for name, value in got.items()}
    return {name: count - counts[UNKNOWN] for name, count in counts.items()}


@pytest.mark.parametrize("parse", PARSERS)
def test_no_request_value_outlives_its_request(parse):
    assert len(KNOWN) > 40 and {"HTTP_AUTHORIZATION", "HTTP_COOKIE", "QUERY_STRING",
                                "REQUEST_URI", "HTTP_REFERER"} <= set(KNOWN)
    parse(client.encode_pairs(dict.fromkeys(KNOWN, "an earlier request")))
    held = extra_references(parse, KNOWN)
    assert {name: count for name, count in held.items() if count} == {}


def test_the_count_sees_a_value_kept_elsewhere():
    # The method can fail: a value something still holds counts one more.
    kept = []

    def parse_and_keep(pairs):
        params = fcgi_whole.decode_params_py(pairs)
        kept.append(params["HTTP_COOKIE"])
        return params

    assert extra_references(parse_and_keep, ["HTTP_COOKIE", "PATH_INFO"]) == {
        "HTTP_COOKIE": 1, "PATH_INFO": 0, UNKNOWN: 0}


# -- recv_now and send_now against os.read and os.write -----------------------------

STEPS = st.lists(st.one_of(
    st.tuples(st.just("peer sends"), st.binary(min_size=1, max_size=3000)),
    st.tuples(st.just("read"), st.integers(0, 5000)),
    st.tuples(st.just("write"), st.binary(max_size=3000)),
    st.tuples(st.just("peer closes"), st.none()),
), max_size=12)


def run_steps(steps, read, write):
    """Outcomes of ``steps`` on a fresh non-blocking socket pair."""
    ours, peer = socket.socketpair()
    outcomes = []
    with ours, peer:
        ours.setblocking(False)
        fd = ours.fileno()
        for step, arg in steps:
            try:
                if step == "peer sends":
                    outcomes.append(peer.send(arg) if peer.fileno() >= 0 else None)
                elif step == "read":
                    outcomes.append(read(fd, arg))
                elif step == "write":
                    outcomes.append(write(fd, arg))
                elif peer.fileno() >= 0:
                    peer.setblocking(False)
                    try:
                        outcomes.append(peer.recv(1 << 20))
                    except BlockingIOError:
                        outcomes.append("nothing")
                    peer.close()
            except OSError as exc:
                outcomes.append(type(exc).__name__)
    return outcomes


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_the_c_reads_and_writes_agree_with_os_read_and_write(steps):
    wire = modes.wire()
    assert run_steps(steps, wire.recv_now, wire.send_now) == run_steps(steps, os.read, os.write)
