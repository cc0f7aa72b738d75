import os
import re

from setuptools import Extension, find_packages, setup

with open("README.rst", encoding="utf-8") as readme:
    long_description = readme.read()

# The one version string is the package's __version__; read, not imported,
# so building never runs the package's code.
with open("runfcgi_compat/__init__.py", encoding="utf-8") as init:
    version = re.search(r'^__version__ = "([^"]+)"$', init.read(), re.M).group(1)

# The C module is optional: without a compiler the install goes on and its
# Python twins serve.  Wheels built for others must have it, so the wheel
# builds (scripts/wheels, cibuildwheel) set RUNFCGI_REQUIRE_C=1 to fail
# instead of quietly leaving it out.
require_c = os.environ.get("RUNFCGI_REQUIRE_C", "") not in ("", "0")

setup(
    name="runfcgi-compat",
    version=version,
    description="Django 1.8's manage.py runfcgi (FastCGI, SCGI, AJP via flup) for Django 4.2-6.1",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    packages=find_packages(include=["runfcgi_compat", "runfcgi_compat.*"]),
    package_data={"runfcgi_compat": ["frontends/templates/*", "frontends/templates/**/*"]},
    include_package_data=True,
    # The FastCGI fast path's byte work in C (servers/speedups.py picks it).
    ext_modules=[Extension("runfcgi_compat.servers._wire",
                           ["runfcgi_compat/servers/_wire.c"], optional=not require_c)],
    python_requires=">=3.10",
    install_requires=["Django>=4.2", "flup>=1.0.3,<1.1"],
    # The live-server fixtures (runfcgi_compat.testing) for pytest-django users.
    entry_points={"pytest11": ["runfcgi_compat = runfcgi_compat.pytest_plugin"]},
    classifiers=[
        "Development Status :: 5 - Production/Stable",
        "Environment :: Web Environment",
        "Framework :: Django",
        "Framework :: Django :: 4.2",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Framework :: Django :: 6.1",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
