"""wsgi.input: it ends at CONTENT_LENGTH, and every read PEP 3333 allows works."""
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runfcgi_compat.servers.body import BodyCut, LimitedInput, request_body


class Stream:
    """A protocol's body stream: read(n) returns n bytes, fewer only at its
    end; readline is not offered (flup's returned more than asked)."""

    def __init__(self, data):
        self._data = io.BytesIO(data)
        self.calls = 0

    def read(self, size=-1):
        self.calls += 1
        return self._data.read(size)

    def rest(self):
        return self._data.read()


def test_bytes_body_is_cut_at_content_length():
    assert request_body(b"abcdef", 3).read() == b"abc"
    assert request_body(b"abc", None).read() == b"abc"
    assert request_body(b"a\nb\nc", 4).readlines() == [b"a\n", b"b\n"]


def test_a_whole_body_short_of_content_length_is_refused_before_the_app():
    with pytest.raises(BodyCut) as cut:
        request_body(b"abc", 10)
    assert str(cut.value) == "the request body ended after 3 of its 10 bytes (CONTENT_LENGTH)"


@pytest.mark.parametrize("read", [lambda b: b.read(), lambda b: b.read(8), lambda b: list(b)])
def test_a_stream_that_ends_short_of_content_length_breaks_the_read(read):
    # As Apache resends an upload whose first backend died: the whole
    # CONTENT_LENGTH, and only the part the dead one had not taken.
    body = request_body(Stream(b"abc\ndef"), 10)
    with pytest.raises(BodyCut) as cut:
        read(body)
    assert isinstance(cut.value, ConnectionAbortedError)  # The server's "peer gone".
    assert "after 7 of its 10 bytes" in str(cut.value)


def test_stream_body_never_reads_past_content_length():
    raw = Stream(b"line 1\nline 2\nNOT THE BODY")
    body = request_body(raw, 14)
    assert list(body) == [b"line 1\n", b"line 2\n"]
    assert body.read(5) == b"" and body.read() == b"" and body.readline() == b""
    assert raw.rest() == b"NOT THE BODY"


def test_without_content_length_the_stream_ends_the_body():
    body = request_body(Stream(b"x\ny"), None)
    assert body.readline() == b"x\n"
    assert body.read() == b"y"
    assert body.read(1) == b""


def test_readline_size_is_a_bound():
    body = LimitedInput(Stream(b"abcdef\ngh\n"), 10)
    assert body.readline(4) == b"abcd"
    assert body.readline(4) == b"ef\n"
    assert body.readline(0) == b""
    assert body.read(1) == b"g"
    assert body.readline(None) == b"h\n"


def test_read_after_readline_takes_the_buffered_bytes_first():
    body = LimitedInput(Stream(b"a\n" + b"x" * 20000), 20002)
    assert body.readline() == b"a\n"
    assert body.read(3) == b"xxx"
    assert body.read(None) == b"x" * 19997


def test_readlines_hint():
    body = LimitedInput(Stream(b"a\nb\nc\n"), 6)
    assert body.readlines(2) == [b"a\n"]
    assert body.readlines() == [b"b\n", b"c\n"]


def test_a_long_line_is_read_in_growing_pieces():
    raw = Stream(b"y" * 1_000_000)
    assert LimitedInput(raw, 1_000_000).readline() == b"y" * 1_000_000
    assert raw.calls < 20  # Doubling: not 1_000_000 / 8192 reads.


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 250),
       st.lists(st.tuples(st.sampled_from(["read", "readline", "readlines"]),
                          st.one_of(st.none(), st.integers(-1, 40))), max_size=12))
def test_any_mix_of_reads_gives_the_body_up_to_content_length(data, length, calls):
    """As a BytesIO of the first CONTENT_LENGTH bytes would."""
    length = min(length, len(data) + len(b"\nNOT THE BODY"))  # Longer: BodyCut, above.
    body = LimitedInput(Stream(data + b"\nNOT THE BODY"), length)
    model = io.BytesIO((data + b"\nNOT THE BODY")[:length])
    for name, size in calls:
        if name == "readlines":
            size = -1 if size is None else size
        got, expected = getattr(body, name)(size), getattr(model, name)(size)
        assert got == expected, (name, size)
    assert body.read() == model.read()


@pytest.mark.parametrize("body", [b"", b"abc"])
def test_bytes_are_bytes(body):
    stream = request_body(Stream(body), len(body))
    assert type(stream.read(10)) is bytes and type(stream.readline()) is bytes
