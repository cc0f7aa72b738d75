"""A fake monotonic clock for the pools' deadlines: a test moves it by hand."""


class FakeClock:
    """Called like ``time.monotonic``; returns ``now``, which only the test changes."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now
