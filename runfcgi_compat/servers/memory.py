"""Keep the prefork master's memory shared with its workers.

A forked worker shares every page of the master until one side writes to
it.  Python's cyclic garbage collector writes to the header of every object
it examines, so a worker's first full collection (which comes sooner or
later in any worker: as objects survive, when the application calls
``gc.collect()``) writes to every page that holds a container object the
master loaded -- Django, the project, its URLconf -- and the worker ends up
with a private copy of most of them: about 12 MiB more per worker for the
bench site (``bench/memory.py``), on top of the 6 MiB a worker makes its
own by serving requests.

``gc.freeze()`` in the master, once the application is loaded and before
the first fork, moves every object it holds to a generation that no
collection examines, in the master or in any worker forked from it
(respawned workers too); objects the workers create are collected as
usual.  No ``gc.collect()`` before it: the holes it leaves in the master's
memory are filled by the workers' first allocations, which copies the pages
around them (measured: 1 % more memory in all).
"""
import gc


def share_with_workers():
    """Call once in the master, after loading the app, before forking."""
    gc.freeze()
