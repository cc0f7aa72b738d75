"""``python -m runfcgi_compat.testing.child``: runfcgi for a live server, in a child.

The test process passes, in the environment, the runfcgi words, the test
databases' names and the settings it changed (``backend.ChildBackend``);
the project's settings module is the test process's.  A failure to start
ends this process with its message on standard error, which the test
process puts in the test's failure.
"""
import json
import logging
import os
import sys

from runfcgi_compat.testing.backend import CHILD_ENV, load_project


def main():
    spec = json.loads(os.environ.pop(CHILD_ENV))
    import django
    from django.conf import settings

    for name, value in spec["settings"].items():
        setattr(settings, name, value)
    for alias, name in spec["databases"].items():
        settings.DATABASES[alias]["NAME"] = name
    django.setup()
    # Only what goes wrong: the test's output is no place for start/stop news.
    logging.getLogger("runfcgi_compat").setLevel(logging.WARNING)

    from runfcgi_compat import options, runner
    from runfcgi_compat.errors import StartupError

    try:
        runner.run(options.parse_words(spec["words"]), load_app=load_project)
    except (options.OptionError, StartupError) as exc:
        sys.stderr.write(f"runfcgi: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
