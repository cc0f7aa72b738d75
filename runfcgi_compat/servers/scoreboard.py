"""The prefork scoreboard: each worker's state in memory shared with the master.

flup's children (and our first pool) wrote a byte to the master on every
change of state, two per connection, and each write woke the master: a
system call and a context switch per request just for bookkeeping.  Here a
worker stores its state in its own byte of an anonymous shared mapping
(made before fork, so every worker sees the same page) and the master reads
the page whenever it wakes.  A worker wakes the master only when the master
has something to do about it (see ``PreforkPool``): start workers, or
refuse connections that no worker can take.

One byte per slot; slot numbers are handed out by the master at fork.
"""
import functools
import mmap

FREE = b"\0"  # no worker in this slot
STARTING = b"S"  # forked, loading the app
IDLE = b"I"  # in the accept loop
BUSY = b"B"  # a request in progress
HOLDING = b"K"  # a connection open, no request in it yet (fresh or kept)
STALLED = b"W"  # a request in progress, waiting for the peer's next bytes
EXITING = b"X"  # left the accept loop; the master has not reaped it yet


class Scoreboard:
    def __init__(self, slots):
        # fileno -1: anonymous and MAP_SHARED, so writes after fork are seen
        # by every process that shares the mapping.
        self._map = mmap.mmap(-1, max(1, slots))
        self.slots = slots

    def set(self, slot, state):
        self._map[slot] = state[0]

    def setter(self, slot):
        """``set`` for one slot, taking the state's byte as an int (a worker
        marks its state several times per request)."""
        return functools.partial(self._map.__setitem__, slot)

    def get(self, slot):
        return self._map[slot:slot + 1]

    def snapshot(self):
        """The states of all slots as one bytes object (one copy, no locking:
        each byte is written whole, and a stale byte only delays a decision)."""
        return self._map[:self.slots]

    def free_slot(self, taken):
        """Return a FREE slot not in ``taken``, or None."""
        states = self.snapshot()
        for slot in range(self.slots):
            if states[slot:slot + 1] == FREE and slot not in taken:
                return slot
        return None

    def close(self):
        self._map.close()
