"""The content core: what the gateway does to record keys, values and headers, knowing no protocol.

`compile_profile` / `combine` build mask profiles (brokerguard.content.masking), `DetectorSet`
finds detectors of sensitive text and named path sets (brokerguard.content.detectors),
`compile_validation` builds payload checks (brokerguard.content.validation). An adapter hands
them the keys, values and headers of one record batch as plain lists.
"""

from __future__ import annotations

from brokerguard.content.detectors import Detector, DetectorSet, PathSet, Scanner, builtin_detectors
from brokerguard.content.errors import ContentSpecError, DetectorError
from brokerguard.content.masking import UNMASKABLE, Mask, MaskProfile, combine, compile_profile, parse_path
from brokerguard.content.validation import Validation, compile_validation

__all__ = ["UNMASKABLE", "ContentSpecError", "Detector", "DetectorError", "DetectorSet", "Mask", "MaskProfile",
           "PathSet", "Scanner", "Validation", "builtin_detectors", "combine", "compile_profile", "compile_validation",
           "parse_path"]
