"""The one error of the frame scanners, every message it carries, and the argument checks.

Both twins (frames.pyx and frames_py.py) build their errors here, so the same input gives
the same message whichever twin read it. Nothing here runs on the hot path unless input is bad.
"""
import operator


class FrameError(ValueError):
    """Malformed or oversized Kafka wire input; the message names what is wrong."""


def negative_size(size: int) -> FrameError:
    return FrameError(f"negative frame size {size}")


def oversized(size: int, limit: int) -> FrameError:
    return FrameError(f"frame size {size} exceeds the limit of {limit} bytes")


def request_header_truncated(frame_size: int) -> FrameError:
    return FrameError(f"request header truncated: frame of {frame_size} bytes")


def response_header_truncated(frame_size: int) -> FrameError:
    return FrameError(f"response header truncated: frame of {frame_size} bytes")


def client_id_invalid_length(length: int) -> FrameError:
    return FrameError(f"request header invalid: client_id length {length}")


def client_id_truncated(length: int, frame_size: int) -> FrameError:
    return FrameError(
        f"request header truncated: client_id of {length} bytes runs past the end of "
        f"a frame of {frame_size} bytes"
    )


def client_id_not_utf8(err: UnicodeDecodeError) -> FrameError:
    return FrameError(f"request header invalid: client_id is not valid UTF-8 ({err.reason} at byte {err.start})")


def tagged_fields_truncated(frame_size: int) -> FrameError:
    return FrameError(f"request header truncated: tagged fields run past the end of a frame of {frame_size} bytes")


def unknown_api_key(api_key: int) -> FrameError:
    return FrameError(f"request header of unknown api_key {api_key}: its header version is not known")


def produce_truncated(api_version: int) -> FrameError:
    return FrameError(f"Produce v{api_version} body truncated before acks")


def transactional_id_invalid_length(api_version: int, length: int) -> FrameError:
    return FrameError(f"Produce v{api_version} body invalid: transactional_id length {length}")


# Varint faults, as codes so the native twin can report them without raising mid-loop.
VARINT_TRUNCATED = -1
VARINT_TOO_LONG = -2
VARINT_TOO_LARGE = -3


def _varint_fault(code: int) -> str:
    return "is longer than 5 bytes" if code == VARINT_TOO_LONG else "exceeds 32 bits"


def varint_invalid(code: int, part: str, field: str) -> FrameError:
    """An over-long varint inside a field (`part` is e.g. "request header" or "Produce v9 body")."""
    return FrameError(f"{part} invalid: {field} varint {_varint_fault(code)}")


def varint_at(code: int, offset: int) -> FrameError:
    """A fault found by read_uvarint, which knows only the buffer offset."""
    if code == VARINT_TRUNCATED:
        return FrameError(f"varint at offset {offset} runs past the end of the buffer")
    return FrameError(f"varint at offset {offset} {_varint_fault(code)}")


def uvarint_out_of_range(value: int) -> FrameError:
    return FrameError(f"value {value} does not fit an unsigned 32-bit varint")


# Configuration mistakes are caught when a scanner is built (ValueError, not FrameError:
# they are the gateway's fault, not the peer's).


def check_flexible_from(flexible_from) -> tuple[int, ...]:
    table = tuple(operator.index(first) for first in flexible_from)
    if not table:
        raise ValueError("flexible_from is empty: it must at least cover api_key 0 (Produce)")
    for api_key, first in enumerate(table):
        if not -1 <= first <= 0x7FFF:
            raise ValueError(
                f"flexible_from[{api_key}] is {first}: give the first flexible version (0-32767), or -1 for never"
            )
    return table


def check_max_frame_bytes(max_frame_bytes, minimum: int) -> int:
    limit = operator.index(max_frame_bytes)
    if limit < minimum:
        raise ValueError(f"max_frame_bytes is {limit}: a frame needs at least {minimum} bytes")
    return limit


def check_range(start: int, end: int, length: int) -> None:
    if not 0 <= start <= end <= length:
        raise ValueError(f"range [{start}, {end}) lies outside a buffer of {length} bytes")
