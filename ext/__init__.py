"""Hot paths of the data plane: compiled twins, with pure-Python references beside them.

The choice is made once, here: the compiled modules, unless BROKERGUARD_NO_EXTENSIONS=1
asks for the pure-Python twins (debugging, or a platform without a compiler).
"""
import os

from brokerguard._native.errors import FrameError

if os.environ.get("BROKERGUARD_NO_EXTENSIONS") == "1":
    from brokerguard._native import frames_py as _frames

    IMPLEMENTATION = "python"
else:
    try:
        from brokerguard._native import frames as _frames
    except ImportError as err:
        # A silent fallback would hide a slow gateway; say how to fix it instead.
        raise ImportError(
            "brokerguard._native.frames is not compiled: run `pip install -e .` to build it, "
            "or set BROKERGUARD_NO_EXTENSIONS=1 to use the pure-Python twins"
        ) from err

    IMPLEMENTATION = "cython"

RequestScanner = _frames.RequestScanner
ResponseScanner = _frames.ResponseScanner
parse_request_header = _frames.parse_request_header
read_uvarint = _frames.read_uvarint
write_uvarint = _frames.write_uvarint

__all__ = [
    "IMPLEMENTATION",
    "FrameError",
    "RequestScanner",
    "ResponseScanner",
    "parse_request_header",
    "read_uvarint",
    "write_uvarint",
]
