from setuptools import Extension, find_packages, setup

with open("README.rst", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="runfcgi-compat",
    version="1.0.0",
    description="Django 1.8's manage.py runfcgi (FastCGI, SCGI, AJP via flup) for Django 4.2-6.1",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    packages=find_packages(include=["runfcgi_compat", "runfcgi_compat.*"]),
    package_data={"runfcgi_compat": ["frontends/templates/*", "frontends/templates/**/*"]},
    include_package_data=True,
    # The FastCGI fast path's byte work in C; optional: without a compiler
    # the install goes on and the Python versions are used (fcgi_whole, base).
    ext_modules=[Extension("runfcgi_compat.servers._wire",
                           ["runfcgi_compat/servers/_wire.c"], optional=True)],
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
        "License :: OSI Approved :: BSD License",
        "Operating System :: POSIX",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
