"""handover.py: the state a prefork master hands to its new image on reload."""
import json
import os
import socket

import pytest

from runfcgi_compat import handover
from runfcgi_compat.handover import HandoverError, State
from runfcgi_compat.sockets import listen_unix


def full_state(**changes):
    fields = dict(listen_fd=7, description="unix:/run/site.sock", cwd="/srv",
                  workdir="/", unix_path="/run/site.sock",
                  socket_file=(8, "site.sock", 2049, 1234), pidfile="/run/site.pid",
                  pidfile_dir_fd=9, workers=(101, 102))
    fields.update(changes)
    return State(**fields)


@pytest.mark.parametrize("state", [
    full_state(),
    State(listen_fd=3, description="127.0.0.1:8000", cwd="/srv", workdir="/srv"),
])
def test_encode_then_decode_gives_the_same_state(state):
    assert handover.decode(handover.encode(state)) == state


def test_the_state_names_every_descriptor_it_carries():
    assert sorted(full_state().descriptors()) == [7, 8, 9]
    assert State(listen_fd=3, description="x", cwd="/", workdir="/").descriptors() == [3]


def without(name):
    fields = json.loads(handover.encode(full_state()))
    del fields[name]
    return json.dumps(fields)


def changed(**values):
    fields = json.loads(handover.encode(full_state()))
    fields.update(values)
    return json.dumps(fields)


@pytest.mark.parametrize("raw, message", [
    ("{not json", "RUNFCGI_REEXEC is not valid JSON"),
    ("[1, 2]", "RUNFCGI_REEXEC is not a JSON object."),
    (without("version"), "is not version 1 of the hand-over"),
    (without("listen_fd"), "RUNFCGI_REEXEC lacks listen_fd."),
    (changed(colour="blue"), "RUNFCGI_REEXEC has unknown colour."),
    (changed(listen_fd="7"), "RUNFCGI_REEXEC: listen_fd='7' is not int."),
    (changed(listen_fd=True), "RUNFCGI_REEXEC: listen_fd=True is not int."),
    (changed(socket_file=[8, "a"]), "socket_file=[8, 'a'] is not [dir_fd, name, dev, inode]"),
    (changed(socket_file=[8, 9, 1, 2]), "socket_file=[8, 9, 1, 2] is not [dir_fd, name, "),
    (changed(workers=[101, "x"]), "workers=[101, 'x'] is not a list of pids."),
])
def test_a_garbled_state_is_refused_by_name(raw, message):
    with pytest.raises(HandoverError) as caught:
        handover.decode(raw)
    assert message in str(caught.value)


def test_no_state_means_no_reload():
    assert handover.take({}) is None


def test_environments_for_the_probe_and_the_new_image():
    base = {"PATH": "/bin", handover.STATE_ENV: "stale", handover.PROBE_ENV: "1"}
    probe = handover.probe_environ(base)
    assert handover.is_probe(probe) and handover.STATE_ENV not in probe
    image = handover.exec_environ(base, full_state())
    assert not handover.is_probe(image)
    assert handover.decode(image[handover.STATE_ENV]) == full_state()
    assert base[handover.STATE_ENV] == "stale"  # The caller's mapping is left alone.


def test_a_listening_socket_and_pidfile_cross_and_come_back(tmp_path):
    listener = listen_unix(str(tmp_path / "s.sock"))
    pid_path = tmp_path / "s.pid"
    pid_path.write_text(f"{os.getpid()}\n")
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    written = type("Written", (), {"path": str(pid_path), "dir_fd": dir_fd})()
    state = handover.describe_master(listener, written, cwd="/somewhere")
    assert (state.cwd, state.workdir, state.pidfile) == ("/somewhere", os.getcwd(),
                                                        str(pid_path))
    handover.inherit(state)
    assert all(os.get_inheritable(fd) for fd in state.descriptors())

    # As the new image sees it: the state from the environment, the same numbers.
    environ = handover.exec_environ({}, state)
    taken = handover.take(environ)
    assert handover.STATE_ENV not in environ
    assert taken == state
    assert not any(os.get_inheritable(fd) for fd in taken.descriptors())
    again = handover.listener(taken)
    assert again.sock.fileno() == listener.sock.fileno()
    assert again.sock.getsockname() == str(tmp_path / "s.sock")
    handover.written_pidfile(taken).remove()  # Holds our pid: removed.
    assert not pid_path.exists()
    again.close()  # Still our socket file: removed.
    assert not (tmp_path / "s.sock").exists()
    listener.sock.detach()  # Same descriptor, closed above.


def test_a_descriptor_that_did_not_come_across_is_refused():
    with socket.socket() as sock:
        fd = sock.fileno()
    state = State(listen_fd=fd, description="x", cwd="/", workdir="/")
    with pytest.raises(HandoverError, match=f"descriptor {fd} did not come across"):
        handover.take(handover.exec_environ({}, state))


def test_a_descriptor_that_is_not_a_socket_is_refused(tmp_path):
    with open(tmp_path / "f", "w") as f:
        state = State(listen_fd=f.fileno(), description="x", cwd="/", workdir="/")
        with pytest.raises(HandoverError, match=f"listen_fd={f.fileno()} is not a socket"):
            handover.take(handover.exec_environ({}, state))
