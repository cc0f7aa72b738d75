#!{{ python }}
"""FastCGI entry point for mod_fcgid: Apache starts this script itself.

Apache hands it a listening socket on fd 0; ``touch`` this file to restart it.
"""
import os
import sys

{% for path in pythonpath %}
sys.path.insert({{ forloop.counter0 }}, {{ path|stringformat:"r" }})
{% endfor %}
os.chdir({{ project_dir|stringformat:"r" }})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", {{ settings|stringformat:"r" }})

from runfcgi_compat.fastcgi import runfastcgi

runfastcgi(method="threaded", daemonize="false")
