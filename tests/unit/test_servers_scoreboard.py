"""The scoreboard: one byte per worker in memory shared across fork."""
import os

import pytest

from runfcgi_compat.servers.scoreboard import BUSY, FREE, IDLE, STALLED, Scoreboard


@pytest.fixture
def board():
    board = Scoreboard(4)
    yield board
    board.close()


def test_every_slot_starts_free(board):
    assert board.snapshot() == FREE * 4
    assert [board.get(slot) for slot in range(4)] == [FREE] * 4


def test_set_and_the_setter_write_one_slot_each(board):
    board.set(1, BUSY)
    board.setter(3)(STALLED[0])  # A worker's setter takes the byte as an int.
    assert board.snapshot() == FREE + BUSY + FREE + STALLED
    assert board.get(3) == STALLED


def test_free_slot_skips_taken_and_used_slots(board):
    board.set(0, IDLE)
    assert board.free_slot(taken=set()) == 1
    assert board.free_slot(taken={1, 2}) == 3
    assert board.free_slot(taken={1, 2, 3}) is None


def test_a_forked_process_writes_what_the_parent_reads(board):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            board.setter(2)(BUSY[0])
            os.write(write_fd, b"!")
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 1) == b"!"  # Written before this byte was sent.
        assert board.get(2) == BUSY
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)


def test_an_empty_pool_still_maps_a_page():
    board = Scoreboard(0)
    try:
        assert board.snapshot() == b"" and board.free_slot(set()) is None
    finally:
        board.close()
