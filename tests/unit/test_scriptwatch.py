"""scriptwatch.py: a changed script stops the server gracefully (SIGTERM to itself)."""
import subprocess
import sys
import textwrap


def test_touching_the_script_sends_sigterm(tmp_path):
    script = tmp_path / "mysite.fcgi"
    script.write_text("# a script\n")
    code = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        from runfcgi_compat import scriptwatch
        got = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: got.set())
        watcher = scriptwatch.start({str(script)!r}, interval=0.05)
        assert not got.wait(0.3), "stopped before the script changed"
        later = time.time() + 10
        os.utime({str(script)!r}, (later, later))
        print("stopped" if got.wait(20) else "still running")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "stopped\n", done.stderr


def test_unreadable_script_is_not_watched(tmp_path):
    from runfcgi_compat import scriptwatch

    assert scriptwatch.start(str(tmp_path / "missing.fcgi")) is None
