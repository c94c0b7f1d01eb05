# cython: language_level=3
"""Compiled twin of jsoncheck_py.py: whether JSON documents surely pass a schema, in one C pass.

The walk reads the bytes with the tokens of json_tokens.pxd, follows the schema's node for each
value, and builds no Python object, but for the strings a `pattern` or `format` applies to:
those are handed as text to a jsonschema_rs validator of just those keywords. Any doubt is a False: the caller then asks the full
validator, which is also what explains a failure. Doubt means a number with an exponent or
more digits than a double holds, a number near a bound beyond 2**53, a string with a
surrogate escape (orjson refuses lone ones), a string with escapes under a length or enum
rule it would have to decode, a 2.0 where an integer is wanted, nesting beyond MAX_DEPTH.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_New, PyCapsule_SetContext
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, strtod
from libc.string cimport memchr, memcpy, memset

from json_tokens cimport _escaped_key_is, _hex4, _key_is, _key_word, _literal, _same, _string, _ws
from value_check cimport CHECK_CAPSULE

import jsonschema_rs
import orjson

from brokerguard._native import jsoncheck_py as _py

__all__ = ["MAX_DEPTH", "SchemaCheck", "compile_check"]

MAX_DEPTH = _py.MAX_DEPTH
cdef Py_ssize_t DEPTH_LIMIT = MAX_DEPTH

cdef enum:
    T_NULL = 1
    T_BOOLEAN = 2
    T_INTEGER = 4
    T_FRACTION = 8
    T_STRING = 16
    T_ARRAY = 32
    T_OBJECT = 64
    E_STRING = 1
    E_INTEGER = 2
    E_NULL = 3
    E_TRUE = 4
    E_FALSE = 5
    ANY = -1
    FAIL = -1  # not surely passing: invalid JSON, against the schema, or in doubt
    INTEGER_DIGITS = 18  # an integer token of at most this many digits is an int64 and an int to orjson
    EXACT_DIGITS = 15  # ... and of at most this many, a double exactly (compared with bounds)
    FRACTION_CHARS = 24  # a fraction token at most this long (a double, never infinite)

assert (T_NULL, T_BOOLEAN, T_INTEGER, T_FRACTION, T_STRING, T_ARRAY, T_OBJECT) == (
    _py.T_NULL, _py.T_BOOLEAN, _py.T_INTEGER, _py.T_FRACTION, _py.T_STRING, _py.T_ARRAY, _py.T_OBJECT)
assert (E_STRING, E_INTEGER, E_NULL, E_TRUE, E_FALSE, ANY) == (
    _py.E_STRING, _py.E_INTEGER, _py.E_NULL, _py.E_TRUE, _py.E_FALSE, _py.ANY)


ctypedef struct Node:
    int types
    bint has_minimum, has_exclusive_minimum, has_maximum, has_exclusive_maximum
    double minimum, exclusive_minimum, maximum, exclusive_maximum
    Py_ssize_t min_length, max_length  # -1: none
    bint has_enum
    Py_ssize_t enum_first, enum_count
    Py_ssize_t property_first, property_count
    uint64_t required
    int additional, items
    Py_ssize_t min_items, max_items
    Py_ssize_t text  # the is_valid of pattern and format in Plan.texts, or -1


ctypedef struct Property:
    const unsigned char* name  # UTF-8 (surrogatepass)
    Py_ssize_t size
    uint64_t word, mask  # for _key_is
    int child
    uint64_t bit


ctypedef struct Choice:
    int kind
    const unsigned char* text
    Py_ssize_t size
    int64_t integer


ctypedef struct Plan:
    const Node* nodes
    const Property* properties
    const Choice* choices
    PyObject* texts  # a list, held by the SchemaCheck


cdef bint _lone_surrogate(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    """Whether the valid string body p[pos:end] escapes a surrogate that is not half of a pair."""
    cdef uint32_t code, low
    while pos < end:
        if p[pos] != 0x5C:
            pos += 1
            continue
        if p[pos + 1] != 0x75:
            pos += 2
            continue
        code = _hex4(p + pos + 2)
        pos += 6
        if 0xDC00 <= code < 0xE000:
            return True
        if 0xD800 <= code < 0xDC00:
            if pos + 6 > end or p[pos] != 0x5C or p[pos + 1] != 0x75:
                return True
            low = _hex4(p + pos + 2)
            if not 0xDC00 <= low < 0xE000:
                return True
            pos += 6
    return False


cdef inline bint _choice_is_text(const Choice* choice, const unsigned char* body, Py_ssize_t size,
                                 bint escaped) noexcept nogil:
    if choice.kind != E_STRING:
        return False
    if escaped:
        return _escaped_key_is(body, size, choice.text, choice.size)
    return choice.size == size and _same(choice.text, body, size)


cdef inline Py_ssize_t _property(const Plan* plan, const Node* s, const unsigned char* key, Py_ssize_t size,
                                 bint escaped, Py_ssize_t start, Py_ssize_t readable) noexcept nogil:
    """The index of s's property named by the key between its quotes (`readable` bytes from key
    are in the document), or -1. The search starts at
    `start` (at the first property if `start` is past the last) and wraps around: keys tend to
    come in the order of the schema's properties, so starting after the last match mostly finds
    the next one."""
    cdef Py_ssize_t first = s.property_first, end = s.property_first + s.property_count, k
    cdef Py_ssize_t i = start if start < end else first
    cdef const Property* prop
    for k in range(s.property_count):
        prop = &plan.properties[i]
        if (_escaped_key_is(key, size, prop.name, prop.size) if escaped
                else prop.size == size and _key_is(key, size, readable, prop.name, prop.word, prop.mask)):
            return i
        i += 1
        if i == end:
            i = first
    return -1


cdef bint _text_passes(const Plan* plan, Py_ssize_t text, const unsigned char* p, Py_ssize_t start,
                       Py_ssize_t end, bint escaped) noexcept:
    """Whether the string token p[start:end] passes the node's pattern and format."""
    try:
        if escaped:
            value = orjson.loads(p[start:end])
        else:
            value = PyUnicode_DecodeUTF8(<const char*>p + start + 1, end - start - 2, NULL)
        return (<list>plan.texts)[text](value) is True
    except Exception:  # a doubt, like any other: the full validator says what is wrong
        return False


cdef inline Py_ssize_t _string_token(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n,
                                     bint* escaped) noexcept nogil:
    """Past the string token at pos (its opening quote), or FAIL: orjson refuses lone surrogates."""
    cdef Py_ssize_t end = _string(p, pos + 1, n, escaped)
    if end < 0 or (escaped[0] and _lone_surrogate(p, pos + 1, end - 1)):
        return FAIL
    return end


cdef Py_ssize_t _string_value(const Plan* plan, int node, const unsigned char* p, Py_ssize_t pos,
                              Py_ssize_t n) noexcept:
    cdef bint escaped = False
    cdef Py_ssize_t end = _string_token(p, pos, n, &escaped), size, count, i
    cdef const unsigned char* body = p + pos + 1
    cdef const Node* s
    if end < 0 or node == ANY:
        return end
    size = end - pos - 2
    s = &plan.nodes[node]
    if not s.types & T_STRING:
        return FAIL
    if s.has_enum:
        for i in range(s.enum_first, s.enum_first + s.enum_count):
            if _choice_is_text(&plan.choices[i], body, size, escaped):
                break
        else:
            return FAIL
    if s.min_length >= 0 or s.max_length >= 0:
        if escaped:
            return FAIL
        count = 0
        for i in range(size):
            count += body[i] & 0xC0 != 0x80  # code points: the bytes that are not continuations
        if count < s.min_length or (s.max_length >= 0 and count > s.max_length):
            return FAIL
    if s.text >= 0 and not _text_passes(plan, s.text, p, pos, end, escaped):
        return FAIL
    return end


cdef double POWERS[23]
for _power in range(23):
    POWERS[_power] = 10.0 ** _power  # each exact as a double
del _power


cdef double _fraction(const unsigned char* p, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """The double nearest the fraction token p[start:end] (no exponent), as orjson reads it."""
    cdef uint64_t mantissa = 0
    cdef int digits = 0, decimals = 0
    cdef bint after_point = False
    cdef Py_ssize_t i
    cdef char text[FRACTION_CHARS + 1]
    for i in range(start, end):
        if p[i] == 0x2E:
            after_point = True
        elif p[i] != 0x2D:
            mantissa = mantissa * 10 + (p[i] - 0x30)
            digits += mantissa != 0
            decimals += after_point
    if digits <= 15 and decimals <= 22:
        # Both exact as doubles, so the one correctly rounded division is the nearest double.
        return (-1.0 if p[start] == 0x2D else 1.0) * <double>mantissa / POWERS[decimals]
    memcpy(text, p + start, end - start)
    text[end - start] = 0
    return strtod(text, NULL)  # correctly rounded too


cdef Py_ssize_t _number_value(const Plan* plan, int node, const unsigned char* p, Py_ssize_t pos,
                              Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t start = pos, digits = 0, i
    cdef bint fraction = False, negative = False
    cdef int64_t integer = 0
    cdef double value
    cdef const Node* s
    if p[pos] == 0x2D:
        negative = True
        pos += 1
    # -? (0 | [1-9][0-9]*) (. [0-9]+)?  -- an exponent is left to the full validator
    if pos >= n or <unsigned char>(p[pos] - 0x30) > 9:
        return FAIL
    if p[pos] == 0x30:
        pos += 1
        digits = 1
    else:
        while pos < n and <unsigned char>(p[pos] - 0x30) <= 9:
            if digits < INTEGER_DIGITS:
                integer = integer * 10 + (p[pos] - 0x30)
            digits += 1
            pos += 1
    if pos < n and p[pos] == 0x2E:
        fraction = True
        pos += 1
        if pos >= n or <unsigned char>(p[pos] - 0x30) > 9:
            return FAIL
        while pos < n and <unsigned char>(p[pos] - 0x30) <= 9:
            pos += 1
    if pos < n and p[pos] | 0x20 == 0x65:  # e E
        return FAIL
    if fraction:
        if pos - start > FRACTION_CHARS:
            return FAIL
    elif digits > INTEGER_DIGITS:
        return FAIL
    if node == ANY:
        return pos
    s = &plan.nodes[node]
    if not s.types & (T_FRACTION if fraction else T_INTEGER):
        return FAIL
    if negative:
        integer = -integer
    if s.has_enum:
        if fraction:
            return FAIL
        for i in range(s.enum_first, s.enum_first + s.enum_count):
            if plan.choices[i].kind == E_INTEGER and plan.choices[i].integer == integer:
                break
        else:
            return FAIL
    if s.has_minimum or s.has_maximum or s.has_exclusive_minimum or s.has_exclusive_maximum:
        if fraction:
            value = _fraction(p, start, pos)
        elif digits > EXACT_DIGITS:
            return FAIL
        else:
            value = <double>integer
        if ((s.has_minimum and not value >= s.minimum)
                or (s.has_exclusive_minimum and not value > s.exclusive_minimum)
                or (s.has_maximum and not value <= s.maximum)
                or (s.has_exclusive_maximum and not value < s.exclusive_maximum)):
            return FAIL
    return pos


cdef inline Py_ssize_t _member(const Plan* plan, int node, const unsigned char* p, Py_ssize_t pos,
                               Py_ssize_t n, Py_ssize_t depth) noexcept:
    """_value for an object's member or an array's item. A string the schema says nothing of (most
    of a typical document's bytes) is read here, saving a recursive call per string."""
    cdef bint escaped = False
    if node != ANY or pos >= n or p[pos] != 0x22:
        return _value(plan, node, p, pos, n, depth)
    return _string_token(p, pos, n, &escaped)


cdef Py_ssize_t _value(const Plan* plan, int node, const unsigned char* p, Py_ssize_t pos,
                       Py_ssize_t n, Py_ssize_t depth) noexcept:
    """Past the value at pos if it surely passes node, else FAIL."""
    cdef unsigned char c
    cdef const Node* s = NULL
    cdef const Property* prop
    cdef Py_ssize_t key_end, size, count, i, hint
    cdef uint64_t seen
    cdef bint escaped
    cdef int child
    cdef int kind
    if pos >= n:
        return FAIL
    if node != ANY:
        s = &plan.nodes[node]
    c = p[pos]
    if c == 0x22:
        return _string_value(plan, node, p, pos, n)
    if c == 0x2D or <unsigned char>(c - 0x30) <= 9:
        return _number_value(plan, node, p, pos, n)
    if c == 0x74 or c == 0x66 or c == 0x6E:  # t f n
        pos = _literal(p, pos, n)
        if pos < 0:
            return FAIL
        if s == NULL:
            return pos
        if not s.types & (T_NULL if c == 0x6E else T_BOOLEAN):
            return FAIL
        if s.has_enum:
            kind = E_NULL if c == 0x6E else (E_TRUE if c == 0x74 else E_FALSE)
            for i in range(s.enum_first, s.enum_first + s.enum_count):
                if plan.choices[i].kind == kind:
                    break
            else:
                return FAIL
        return pos
    if c != 0x7B and c != 0x5B:
        return FAIL
    if depth >= DEPTH_LIMIT:
        return FAIL
    if s != NULL and (not s.types & (T_OBJECT if c == 0x7B else T_ARRAY) or s.has_enum):
        return FAIL  # an enum of objects or arrays is left to the full validator
    pos = _ws(p, pos + 1, n)
    if c == 0x5B:
        count = 0
        child = s.items if s != NULL else ANY
        if pos < n and p[pos] == 0x5D:
            pos += 1
        else:
            while True:
                pos = _member(plan, child, p, pos, n, depth + 1)
                if pos < 0:
                    return FAIL
                count += 1
                pos = _ws(p, pos, n)
                if pos >= n:
                    return FAIL
                if p[pos] == 0x5D:
                    pos += 1
                    break
                if p[pos] != 0x2C:
                    return FAIL
                pos = _ws(p, pos + 1, n)
        if s != NULL and (count < s.min_items or (s.max_items >= 0 and count > s.max_items)):
            return FAIL
        return pos
    seen = 0
    hint = s.property_first if s != NULL else 0
    if pos < n and p[pos] == 0x7D:
        pos += 1
    else:
        while True:
            if pos >= n or p[pos] != 0x22:
                return FAIL
            escaped = False
            key_end = _string(p, pos + 1, n, &escaped)
            if key_end < 0:
                return FAIL
            size = key_end - pos - 2
            if escaped and _lone_surrogate(p, pos + 1, key_end - 1):
                return FAIL
            child = ANY
            if s != NULL:
                child = s.additional
                i = _property(plan, s, p + pos + 1, size, escaped, hint, n - pos - 1)
                if i >= 0:
                    prop = &plan.properties[i]
                    child = prop.child
                    seen |= prop.bit
                    hint = i + 1
            pos = _ws(p, key_end, n)
            if pos >= n or p[pos] != 0x3A:  # :
                return FAIL
            pos = _member(plan, child, p, _ws(p, pos + 1, n), n, depth + 1)
            if pos < 0:
                return FAIL
            pos = _ws(p, pos, n)
            if pos >= n:
                return FAIL
            if p[pos] == 0x7D:
                pos += 1
                break
            if p[pos] != 0x2C:
                return FAIL
            pos = _ws(p, pos + 1, n)
    if s != NULL and seen & s.required != s.required:
        return FAIL
    return pos


cdef inline bint _passes(const Plan* plan, const unsigned char* p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t pos = _value(plan, 0, p, _ws(p, 0, n), n, 0)
    return pos >= 0 and _ws(p, pos, n) == n


cdef bint _check_value(const void* context, const unsigned char* p, Py_ssize_t n) noexcept:
    """The CheckValue of value_check.pxd: context is a SchemaCheck's plan."""
    return _passes(<const Plan*>context, p, n)


@cython.final
cdef class SchemaCheck:
    """Whether JSON documents surely pass a schema. Build with `compile_check`; see jsoncheck.pyi."""

    cdef Plan plan
    cdef Node* nodes
    cdef Property* properties
    cdef Choice* choices
    cdef list held  # the bytes the properties and choices point into
    cdef list texts

    def __cinit__(self):
        self.nodes = NULL
        self.properties = NULL
        self.choices = NULL

    def __dealloc__(self):
        free(self.nodes)
        free(self.properties)
        free(self.choices)

    def __init__(self, schema, nodes):
        cdef Py_ssize_t property_count, choice_count, at_property = 0, at_choice = 0, i
        cdef Node* s
        if self.nodes != NULL:
            raise TypeError("SchemaCheck is initialized once")
        property_count = sum(len(node[8]) for node in nodes)
        choice_count = sum(len(node[7] or ()) for node in nodes)
        self.nodes = <Node*>malloc(len(nodes) * sizeof(Node))
        self.properties = <Property*>malloc((property_count or 1) * sizeof(Property))
        self.choices = <Choice*>malloc((choice_count or 1) * sizeof(Choice))
        if self.nodes == NULL or self.properties == NULL or self.choices == NULL:
            raise MemoryError()
        self.held = []
        self.texts = []
        for i, node in enumerate(nodes):
            (types, minimum, exclusive_minimum, maximum, exclusive_maximum, min_length, max_length, enum,
             properties, required, additional, items, min_items, max_items, text) = node
            s = &self.nodes[i]
            memset(s, 0, sizeof(Node))
            s.types = types
            s.has_minimum = minimum is not None
            s.minimum = minimum if minimum is not None else 0.0
            s.has_exclusive_minimum = exclusive_minimum is not None
            s.exclusive_minimum = exclusive_minimum if exclusive_minimum is not None else 0.0
            s.has_maximum = maximum is not None
            s.maximum = maximum if maximum is not None else 0.0
            s.has_exclusive_maximum = exclusive_maximum is not None
            s.exclusive_maximum = exclusive_maximum if exclusive_maximum is not None else 0.0
            s.min_length = min_length
            s.max_length = max_length
            s.has_enum = enum is not None
            s.enum_first = at_choice
            s.enum_count = len(enum or ())
            for kind, value in enum or ():
                self.choices[at_choice].kind = kind
                self.choices[at_choice].text = NULL
                self.choices[at_choice].size = 0
                self.choices[at_choice].integer = 0
                if kind == E_STRING:
                    self.held.append(value)
                    self.choices[at_choice].text = <const unsigned char*>PyBytes_AS_STRING(value)
                    self.choices[at_choice].size = PyBytes_GET_SIZE(value)
                elif kind == E_INTEGER:
                    self.choices[at_choice].integer = value
                at_choice += 1
            s.property_first = at_property
            s.property_count = len(properties)
            for name, child, bit in properties:
                self.held.append(name)
                self.properties[at_property].name = <const unsigned char*>PyBytes_AS_STRING(name)
                self.properties[at_property].size = PyBytes_GET_SIZE(name)
                _key_word(self.properties[at_property].name, self.properties[at_property].size,
                          &self.properties[at_property].word, &self.properties[at_property].mask)
                self.properties[at_property].child = child
                self.properties[at_property].bit = bit
                at_property += 1
            s.required = required
            s.additional = additional
            s.items = items
            s.min_items = min_items
            s.max_items = max_items
            s.text = -1
            if text is not None:
                s.text = len(self.texts)
                self.texts.append(jsonschema_rs.validator_for(
                    text, offline=True, pattern_options=jsonschema_rs.RegexOptions()).is_valid)
        self.plan.nodes = self.nodes
        self.plan.properties = self.properties
        self.plan.choices = self.choices
        self.plan.texts = <PyObject*>self.texts

    def passes(self, data):
        if not PyBytes_Check(data):
            raise TypeError(f"a document is bytes, not {type(data).__name__}")
        return _passes(&self.plan, <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    @property
    def native_check_value(self):
        """The record core checks a batch's values in place through this (see value_check.pxd)."""
        capsule = PyCapsule_New(<void*>_check_value, CHECK_CAPSULE, NULL)
        PyCapsule_SetContext(capsule, <void*>&self.plan)
        return capsule

    def passes_all(self, list values, bint allow_none):
        cdef Py_ssize_t i
        cdef object value
        for i in range(PyList_GET_SIZE(values)):
            value = <object>PyList_GET_ITEM(values, i)
            if value is None:
                if not allow_none:
                    return False
            elif not PyBytes_Check(value) or not _passes(
                    &self.plan, <const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)):
                return False
        return True


def compile_check(schema):
    nodes = _py.plan(schema)
    return None if nodes is None else SchemaCheck(schema, nodes)
