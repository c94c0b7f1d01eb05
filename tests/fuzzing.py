"""What the property tests share: Hypothesis settings (the failing example's blob is printed so
it can be replayed with @reproduce_failure, and slow or large examples are fine) and string
bodies that probe the JSON walkers' block scans.

`FUZZ_SCALE=N` multiplies every test's number of random inputs: `make fuzz` runs the fuzzed
tests with many times what `make test` can afford on every change.
"""

import os

from hypothesis import HealthCheck, settings

SCALE = int(os.environ.get("FUZZ_SCALE") or 1)


def random_inputs(examples: int) -> settings:
    return settings(max_examples=examples * SCALE, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Odd bytes inside a string: what ends or breaks a run of plain bytes, and multi-byte UTF-8.
ODD_STRING_BYTES = [b"\x00", b"\x1f", b"\x7f", b'\\"', b"\\n", b"\\u00e9", b"\\x", b"\xc3\xa9", b"\xe2\x82\xac",
                    b"\xf0\x9f\x98\x80", b"\xc3", b"\xed\xa0\x80", b"\xff", b'"']


def strings_with_an_odd_byte() -> list[bytes]:
    """String bodies of 0 to 40 bytes, plain and with each odd byte at every offset: the compiled
    walkers scan 16 and 8 bytes at a time, so every place in a block and every distance from the
    end of the document is met."""
    out = []
    for size in range(41):
        out.append(b"a" * size)
        out += [b"a" * at + odd + b"a" * (size - at) for at in range(size + 1) for odd in ODD_STRING_BYTES]
    return out
