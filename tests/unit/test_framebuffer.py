"""FrameBuffer against the scanner: any split of a stream of small and large frames comes out
whole and in order, and a large frame's buffer only grows as its bytes arrive."""

import random

import pytest

from brokerguard._native import ResponseScanner
from brokerguard.plugins.kafka.framebuffer import FrameBuffer

REUSABLE = 1024


def frame(size: int, fill: int) -> bytes:
    return size.to_bytes(4, "big") + bytes([fill]) * size


def feed(stream: bytes, read_sizes, trusted: bool) -> list[bytes]:
    buffer, scanner, out = FrameBuffer(REUSABLE, trusted), ResponseScanner(1 << 30), []
    position = 0
    while position < len(stream):
        want = read_sizes()
        target = buffer.writable()
        assert len(target) > 0
        n = min(want, len(target), len(stream) - position)
        target[:n] = stream[position : position + n]
        position += n
        buffer.end += n
        frames, consumed_to, pending = scanner.scan(buffer.buf, 0, buffer.end)
        out += [bytes(buffer.take(start, end)) for start, end, _ in frames]
        buffer.settle(consumed_to, pending)
    return out


@pytest.mark.parametrize("trusted", [False, True])
def test_any_split_gives_back_every_frame_whole_and_in_order(trusted):
    rng = random.Random(7)
    print("seed 7")
    for _ in range(60):
        frames = [frame(rng.choice([4, 9, 100, 1000, 5000, 70000]), i % 256) for i in range(rng.randint(1, 12))]
        stream = b"".join(frames)
        assert feed(stream, lambda: rng.choice([1, 100, 1500, 9000, 65536]), trusted) == frames


def test_an_announced_size_alone_allocates_nothing_large():
    buffer, scanner = FrameBuffer(REUSABLE), ResponseScanner(1 << 30)
    announced = (100 << 20).to_bytes(4, "big") + b"\0" * 8
    buffer.writable()[: len(announced)] = announced
    buffer.end = len(announced)
    _, consumed_to, pending = scanner.scan(buffer.buf, 0, buffer.end)
    buffer.settle(consumed_to, pending)
    assert pending == (100 << 20) + 4
    assert len(buffer.buf) <= 2 * REUSABLE
