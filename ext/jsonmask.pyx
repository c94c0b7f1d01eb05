# JSON read here (RFC 8259), as bytes in UTF-8 (no byte order mark):
#
#   document          ws value ws
#   value             object | array | string | number | true | false | null
#   object            { ws }  or  { ws string ws : ws value ws (, ws string ws : ws value ws)* }
#   array             [ ws ]  or  [ ws value ws (, ws value ws)* ]
#   string            " (char | escape)* "
#     char            any Unicode scalar value from U+0020 on but " and \, in shortest-form UTF-8
#                     (no surrogates ED A0..BF, nothing above U+10FFFF)
#     escape          \" \\ \/ \b \f \n \r \t or \u and 4 hex digits of either case; a surrogate
#                     escape need not be one of a pair (Python's json accepts it too)
#   number            -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
#   ws                space, tab, line feed, carriage return
#
# Nesting: an object or array opens one level (`[]` is depth 1, `[[]]` depth 2); a document
# nested deeper than max_depth is invalid. NaN, Infinity and a BOM are not JSON.
#
# A rule's path names object members, from the root object down: ("card", "number") is the
# member "number" of the object that is the value of the root's member "card". States (see
# jsonmask.pyi) reach into arrays too, by index or every element, and to any depth. Keys are
# compared after decoding their escapes (a surrogate pair is one code point; a lone surrogate
# escape compares as its 3-byte surrogatepass form, as the names are encoded); every occurrence
# of a duplicate key is masked. Elements are counted as they came, dropped ones included.
#
# DROP removes a member's key, colon and value, the whitespace between them, and one comma: the
# one after the value with the whitespace up to the next key, or for the last member the one
# before the key with the whitespace back to the previous value. `{"a":1 , "b":2}` without b is
# `{"a":1}`, without a `{"b":2}`; without its only member an object keeps what whitespace it held.
# An array's element goes the same way: `[1 , 2]` without element 1 is `[1]`.
# cython: language_level=3
"""Compiled twin of jsonmask_py.py: path masking of JSON bytes in one C pass.

The walker validates the whole document and notes where the matched values lie (no Python
object per token); the result is written by copying the unchanged spans into one new bytes
object. Rules and states are checked and compiled by jsonmask_py._compile, so both twins refuse
the same ones with the same messages; this module flattens the states into C arrays.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New
from cpython.pycapsule cimport PyCapsule_New, PyCapsule_SetContext
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy, memset

from json_tokens cimport _escaped_key_is, _key_is, _key_word, _literal, _number, _string, _ws
from pseudonym cimport PSEUDONYM_SIZE, bg_hmac_prepare, bg_pseudonym, bg_sha_extensions
from value_mask cimport (CAPSULE, PLAIN_CAPSULE, VALUE_FALLBACK, VALUE_INVALID, VALUE_KEPT, VALUE_MASKED,
                        MaskOutput, reserve)

from brokerguard._native import jsonmask_py as _py

__all__ = [
    "DROP",
    "FALLBACK",
    "HASH",
    "KEEP_FIRST",
    "KEEP_LAST",
    "NULL",
    "REDACT",
    "FieldMasker",
    "Pseudonyms",
]

FALLBACK = _py.FALLBACK
Pseudonyms = _py.Pseudonyms
REDACT, DROP, KEEP_LAST, KEEP_FIRST, HASH = 1, 3, 4, 5, 6
globals()["NULL"] = 2  # NULL is the C null pointer in Cython source

cdef enum:
    S_REDACT = 1
    S_NULL = 2
    S_DROP = 3
    S_KEEP_LAST = 4
    S_KEEP_FIRST = 5
    S_HASH = 6

cdef enum:
    INVALID = 0
    VALID = 1
    NO_MEMORY = -1

cdef enum:
    LOCAL_EDITS = 16
    LOCAL_KINDS = 256
    LOCAL_FRAMES = 16


ctypedef struct Member:
    # A member name that leads to a state.
    const unsigned char* name  # UTF-8 (surrogatepass)
    Py_ssize_t size
    uint64_t word, mask  # for _key_is
    bint backslash  # the name holds a backslash
    int target


ctypedef struct Element:
    # An array index that leads to a state.
    Py_ssize_t index
    int target


ctypedef struct State:
    int strategy  # what is done to a value here, or 0 (nothing: what is under it may be)
    Py_ssize_t n
    const unsigned char* replacement
    Py_ssize_t replacement_size
    Py_ssize_t first_member  # its members: members[first_member:first_member + member_count]
    Py_ssize_t member_count
    Py_ssize_t first_element
    Py_ssize_t element_count
    int other  # the state of every member or element not listed, or -1
    bint objects  # an object here has members that lead somewhere
    bint arrays  # the same for an array's elements


ctypedef struct Edit:
    Py_ssize_t start  # bytes start:end are replaced as state says, or removed if state is -1
    Py_ssize_t end
    int state
    Py_ssize_t size  # the bytes written instead
    Py_ssize_t stars  # keep_*: how many '*', and the original bytes kept
    Py_ssize_t keep_from
    Py_ssize_t keep_to
    const unsigned char* text  # hash through Python: the bytes written (held by FieldMasker._write)


ctypedef struct Frame:
    # An open container that rules may match members or elements of.
    int state
    Py_ssize_t index  # in an array: the next element's
    int target  # the state of the member or element whose value is being read, if it masks; or -1
    Py_ssize_t value_start
    Py_ssize_t value_end  # the end of the last member's or element's value
    Py_ssize_t run_start  # the start of the first of the dropped members or elements not yet removed, or -1
    Py_ssize_t run_from  # the end of the kept value before that run, or -1
    Py_ssize_t run_end
    bint kept  # a member or element of this container is kept


ctypedef struct MaskPlan:
    # What a FieldMasker compiled, for walks that need no Python object.
    const State* states
    const Member* members
    const Element* elements
    Py_ssize_t max_depth
    bint pseudonyms  # HASH writes pseudonyms under the key whose HMAC states these are
    uint32_t hmac_inner[8]
    uint32_t hmac_outer[8]


ctypedef struct Walk:
    const MaskPlan* plan  # NULL: no rules
    const State* states
    const Member* members
    const Element* elements
    int root  # 0, or -1 when nothing can match
    Py_ssize_t max_depth
    Edit* edits
    Py_ssize_t edit_count
    Py_ssize_t edit_capacity
    bint edits_owned  # edits was malloc'ed
    unsigned char* kinds  # the opening byte of each open container
    Py_ssize_t kind_capacity
    bint kinds_owned
    Frame* frames  # the open containers rules may match in, one per level from the root
    Py_ssize_t frame_capacity
    bint frames_owned
    bint fallback


# Keys and indexes


cdef inline int _member_target(const Walk* w, const State* s, const unsigned char* key, Py_ssize_t size,
                               bint escaped, Py_ssize_t readable) noexcept nogil:
    """The state that the member named key leads to from s (key: its bytes between the quotes,
    `escaped` if they hold a backslash; `readable` bytes from key are in the document), or -1."""
    cdef Py_ssize_t i, first = s.first_member, end = first + s.member_count
    cdef const Member* m
    for i in range(first, end):
        m = &w.members[i]
        if m.size == size and _key_is(key, size, readable, m.name, m.word, m.mask):
            if not m.backslash:
                return m.target
            break  # the key holds a backslash too, so it must be decoded
    else:
        if not escaped:
            return s.other
    for i in range(first, end):
        if _escaped_key_is(key, size, w.members[i].name, w.members[i].size):
            return w.members[i].target
    return s.other


cdef inline int _element_target(const Walk* w, const State* s, Py_ssize_t index) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(s.first_element, s.first_element + s.element_count):
        if w.elements[i].index == index:
            return w.elements[i].target
    return s.other


# The walk


cdef int _grow(void** data, Py_ssize_t* capacity, bint* owned, size_t item) noexcept nogil:
    """Doubles a walk's buffer of `*capacity` items of `item` bytes, all in use, into a malloc'ed
    one (the old one freed if it was malloc'ed too)."""
    cdef void* grown = malloc(2 * capacity[0] * item)
    if grown == NULL:
        return NO_MEMORY
    memcpy(grown, data[0], capacity[0] * item)
    if owned[0]:
        free(data[0])
    data[0] = grown
    owned[0] = True
    capacity[0] *= 2
    return VALID


cdef int _add_edit(Walk* w, Py_ssize_t start, Py_ssize_t end, int state) noexcept nogil:
    if w.edit_count == w.edit_capacity and _grow(<void**>&w.edits, &w.edit_capacity, &w.edits_owned,
                                                 sizeof(Edit)) < 0:
        return NO_MEMORY
    w.edits[w.edit_count].start = start
    w.edits[w.edit_count].end = end
    w.edits[w.edit_count].state = state
    w.edit_count += 1
    return VALID


cdef int _walk(Walk* w, const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """VALID (w.edits and w.fallback say what to do), INVALID or NO_MEMORY."""
    cdef Py_ssize_t pos, depth = 0, nactive = 0, start, key_end
    cdef int next_state = w.root  # the state of a container about to be opened, or -1
    cdef int target
    cdef bint starting = False, escaped  # starting: a member or element starts at pos
    cdef unsigned char* kinds = w.kinds
    cdef Frame* frames = w.frames
    cdef const State* states = w.states
    cdef Py_ssize_t max_depth = w.max_depth
    cdef unsigned char c
    cdef Frame* f
    cdef int strategy
    pos = _ws(p, 0, n)
    while True:
        if starting:
            starting = False
            start = pos
            target = -1
            if kinds[depth - 1] == 0x7B:
                if pos >= n or p[pos] != 0x22:
                    return INVALID
                escaped = False
                pos = _string(p, pos + 1, n, &escaped)
                if pos < 0:
                    return INVALID
                key_end = pos
                pos = _ws(p, pos, n)
                if pos >= n or p[pos] != 0x3A:  # :
                    return INVALID
                pos = _ws(p, pos + 1, n)
                if depth == nactive:
                    f = &frames[depth - 1]
                    target = _member_target(w, &states[f.state], p + start + 1, key_end - start - 2, escaped,
                                            n - start - 1)
            elif depth == nactive:
                f = &frames[depth - 1]
                target = _element_target(w, &states[f.state], f.index)
                f.index += 1
            next_state = -1
            if depth == nactive:
                strategy = states[target].strategy if target >= 0 else 0
                if strategy == S_DROP:
                    if f.run_start < 0:
                        f.run_start = start
                        f.run_from = f.value_end if f.kept else -1
                    f.target = target
                else:
                    if f.run_start >= 0:
                        if _add_edit(w, f.run_start, start, -1) < 0:
                            return NO_MEMORY
                        f.run_start = -1
                    f.kept = True
                    if strategy:
                        f.target = target
                        f.value_start = pos
                    else:
                        next_state = target
        # One value at pos.
        if pos >= n:
            return INVALID
        c = p[pos]
        if c == 0x22:
            pos = _string(p, pos + 1, n)
            if pos < 0:
                return INVALID
        elif c == 0x7B or c == 0x5B:  # { [
            if depth >= max_depth:
                return INVALID
            if depth >= w.kind_capacity:
                if _grow(<void**>&w.kinds, &w.kind_capacity, &w.kinds_owned, 1) < 0:
                    return NO_MEMORY
                kinds = w.kinds
            kinds[depth] = c
            if next_state >= 0 and (states[next_state].objects if c == 0x7B else states[next_state].arrays):
                if depth >= w.frame_capacity:
                    if _grow(<void**>&w.frames, &w.frame_capacity, &w.frames_owned, sizeof(Frame)) < 0:
                        return NO_MEMORY
                    frames = w.frames
                f = &frames[depth]
                f.state = next_state
                f.index = 0
                f.target = -1
                f.run_start = -1
                f.run_from = -1
                f.kept = False
                nactive = depth + 1
            next_state = -1
            depth += 1
            pos = _ws(p, pos + 1, n)
            if pos < n and p[pos] == c + 2:  # } ]: empty
                pos += 1
                depth -= 1
                if nactive > depth:
                    nactive = depth
            else:
                starting = True
                continue
        elif c == 0x2D or <unsigned char>(c - 0x30) <= 9:
            pos = _number(p, pos, n)
            if pos < 0:
                return INVALID
        elif c == 0x74 or c == 0x66 or c == 0x6E:
            pos = _literal(p, pos, n)
            if pos < 0:
                return INVALID
        else:
            return INVALID
        next_state = -1
        # After a value: close containers, or find the next value or key.
        while True:
            if depth == 0:
                return VALID if _ws(p, pos, n) == n else INVALID
            if depth == nactive:
                f = &frames[depth - 1]
                f.value_end = pos
                if f.target >= 0:
                    strategy = states[f.target].strategy
                    if strategy == S_DROP:
                        f.run_end = pos
                    elif strategy >= S_KEEP_LAST and (
                            p[f.value_start] != 0x22 or memchr(p + f.value_start, 0x5C, pos - f.value_start) != NULL):
                        w.fallback = True
                    elif _add_edit(w, f.value_start, pos, f.target) < 0:
                        return NO_MEMORY
                    f.target = -1
            pos = _ws(p, pos, n)
            if pos >= n:
                return INVALID
            c = p[pos]
            if c == 0x2C:  # ,
                pos = _ws(p, pos + 1, n)
                starting = True
                break
            if c != kinds[depth - 1] + 2:
                return INVALID
            if depth == nactive:
                f = &frames[depth - 1]
                if f.run_start >= 0:
                    if _add_edit(w, f.run_from if f.run_from >= 0 else f.run_start, f.run_end, -1) < 0:
                        return NO_MEMORY
                nactive -= 1
            depth -= 1
            pos += 1


cdef int _valid(const unsigned char* p, Py_ssize_t n, Py_ssize_t max_depth) noexcept nogil:
    """VALID, INVALID or NO_MEMORY for p[:n], with no rules."""
    cdef Walk w
    cdef Edit local_edits[1]
    cdef unsigned char local_kinds[LOCAL_KINDS]
    cdef int status
    memset(&w, 0, sizeof(Walk))
    w.root = -1
    w.max_depth = max_depth
    w.edits = local_edits
    w.edit_capacity = 1
    w.kinds = local_kinds
    w.kind_capacity = LOCAL_KINDS
    status = _walk(&w, p, n)
    if w.kinds_owned:
        free(w.kinds)
    return status


cdef inline void _keep(const unsigned char* p, Edit* edit, Py_ssize_t n, bint last) noexcept nogil:
    """Sets the size, stars and kept bytes of a keep_last / keep_first edit of a string without
    escapes: its code points are its bytes that are not UTF-8 continuation bytes."""
    cdef Py_ssize_t start = edit.start + 1, end = edit.end - 1, count = 0, i, seen = 0
    for i in range(start, end):
        count += p[i] & 0xC0 != 0x80
    edit.keep_from = edit.keep_to = start
    if count <= n:
        edit.stars = count
    elif last:
        edit.stars = count - n
        i = start
        while True:  # to the first byte of code point count - n
            if p[i] & 0xC0 != 0x80:
                if seen == count - n:
                    break
                seen += 1
            i += 1
        edit.keep_from = i
        edit.keep_to = end
    else:
        edit.stars = count - n
        i = start
        while i < end:  # to the first byte of code point n
            if p[i] & 0xC0 != 0x80:
                if seen == n:
                    break
                seen += 1
            i += 1
        edit.keep_to = i
    edit.size = 2 + edit.stars + edit.keep_to - edit.keep_from


@cython.final
cdef class FieldMasker:
    """Mask rules, applied to JSON documents byte by byte. See jsonmask.pyi."""

    cdef State* states
    cdef Member* members
    cdef Element* elements
    cdef Py_ssize_t max_depth
    cdef object hash_function
    cdef list held  # the bytes the members and states point into
    cdef MaskPlan plan
    cdef bint uses_hash  # a rule calls hash_function, so masking needs the GIL

    def __cinit__(self):
        self.states = NULL
        self.members = NULL
        self.elements = NULL

    def __dealloc__(self):
        free(self.states)
        free(self.members)
        free(self.elements)

    def __init__(self, rules=(), hash_function=None, max_depth=1024, *, states=None):
        cdef Py_ssize_t member_count, element_count, at_member = 0, at_element = 0, i
        cdef State* s
        cdef Member* m
        if self.states != NULL:  # a mask in progress (calling hash_function) may be reading them
            raise _py._initialized_twice()
        compiled, max_depth = _py._compile(rules, hash_function, max_depth, states)
        member_count = sum(len(state[3]) for state in compiled)
        element_count = sum(len(state[4]) for state in compiled)
        self.states = <State*>malloc(len(compiled) * sizeof(State))
        self.members = <Member*>malloc((member_count or 1) * sizeof(Member))
        self.elements = <Element*>malloc((element_count or 1) * sizeof(Element))
        if self.states == NULL or self.members == NULL or self.elements == NULL:
            free(self.states)
            free(self.members)
            free(self.elements)
            self.states = NULL
            self.members = NULL
            self.elements = NULL
            raise MemoryError()
        self.held = []
        for i, (strategy, n, replacement, members, elements, other) in enumerate(compiled):
            s = &self.states[i]
            s.strategy = strategy
            s.n = n
            s.replacement = NULL
            s.replacement_size = 0
            if replacement is not None:
                self.held.append(replacement)
                s.replacement = <const unsigned char*>PyBytes_AS_STRING(replacement)
                s.replacement_size = PyBytes_GET_SIZE(replacement)
            s.first_member = at_member
            s.member_count = len(members)
            for name, target in members:
                m = &self.members[at_member]
                self.held.append(name)
                m.name = <const unsigned char*>PyBytes_AS_STRING(name)
                m.size = PyBytes_GET_SIZE(name)
                _key_word(m.name, m.size, &m.word, &m.mask)
                m.backslash = b"\\" in name
                m.target = target
                at_member += 1
            s.first_element = at_element
            s.element_count = len(elements)
            for index, target in elements:
                self.elements[at_element].index = index
                self.elements[at_element].target = target
                at_element += 1
            s.other = other
            s.objects = s.member_count > 0 or other >= 0
            s.arrays = s.element_count > 0 or other >= 0
        self.max_depth = max_depth
        self.hash_function = hash_function
        self.plan.states = self.states
        self.plan.members = self.members
        self.plan.elements = self.elements
        self.plan.max_depth = max_depth
        self.plan.pseudonyms = type(hash_function) is Pseudonyms  # a subclass may call differently
        if self.plan.pseudonyms:
            key = hash_function.key
            bg_hmac_prepare(<const unsigned char*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), self.plan.hmac_inner,
                            self.plan.hmac_outer)
        self.uses_hash = not self.plan.pseudonyms and any(state[0] == S_HASH for state in compiled)

    @property
    def native_mask_value(self):
        """The record core masks a batch's values in place through this (see value_mask.pxd)."""
        return _MASK_VALUE

    @property
    def native_mask_plain(self):
        """Unless `hash` rules call Python: a capsule of _mask_plain with this masker's plan as its context,
        which the record core calls without the GIL (see value_mask.pxd); else None."""
        if self.states == NULL or self.uses_hash:
            return None
        capsule = PyCapsule_New(<void*>_mask_plain, PLAIN_CAPSULE, NULL)
        PyCapsule_SetContext(capsule, <void*>&self.plan)
        return capsule

    def mask(self, value):
        if not PyBytes_Check(value):
            raise _py._not_bytes(value)
        cdef MaskOutput out
        memset(&out, 0, sizeof(MaskOutput))
        try:
            return self._answer(value, &out)
        finally:
            free(out.data)

    def mask_all(self, list values):
        cdef list out = PyList_New(0), pending = []
        cdef Py_ssize_t index
        cdef object value, result
        cdef MaskOutput masked  # one buffer for the whole batch
        memset(&masked, 0, sizeof(MaskOutput))
        try:
            for index in range(PyList_GET_SIZE(values)):
                value = <object>PyList_GET_ITEM(values, index)
                if value is None:
                    out.append(None)
                    continue
                masked.size = 0
                result = self._answer(value, &masked) if PyBytes_Check(value) else None
                if result is None or result is FALLBACK:
                    pending.append(index)
                    out.append(value)
                else:
                    out.append(result)
        finally:
            free(masked.data)
        return out, pending

    cdef object _answer(self, object value, MaskOutput* out):
        """mask's answer for value; out is scratch space."""
        cdef int status = self._mask_into(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                                          out)
        if status == VALUE_MASKED:
            return PyBytes_FromStringAndSize(<const char*>out.data, out.size)
        if status == VALUE_KEPT:
            return value
        return None if status == VALUE_INVALID else FALLBACK

    cdef int _mask_into(self, const unsigned char* p, Py_ssize_t size, MaskOutput* out) except -1:
        """A VALUE_* answer for p[:size]; the masked bytes are appended to out (VALUE_MASKED)."""
        cdef Walk w
        cdef Edit local_edits[LOCAL_EDITS]
        cdef unsigned char local_kinds[LOCAL_KINDS]
        cdef Frame local_frames[LOCAL_FRAMES]
        cdef int status
        if self.states == NULL:
            raise TypeError("FieldMasker.__init__ was not called")
        if not self.uses_hash:
            status = _mask_plain(&self.plan, p, size, out)
            if status < 0:
                raise MemoryError()
            return status
        _start_walk(&self.plan, &w, local_edits, local_kinds, local_frames)
        try:
            status = _walk_answer(&w, p, size)
            if status < 0:
                raise MemoryError()
            if status == VALUE_MASKED:
                self._write(p, size, &w, out)
            return status
        finally:
            _end_walk(&w)

    cdef int _write(self, const unsigned char* p, Py_ssize_t size, Walk* w, MaskOutput* output) except -1:
        """Appends p[:size] with w's edits made to output, calling the hash function first."""
        cdef Py_ssize_t i
        cdef Edit* edit
        cdef list hashes = []  # holds the bytes the edits' text points into
        cdef object out
        cdef int status
        for i in range(w.edit_count):
            edit = &w.edits[i]
            if edit.state < 0 or w.states[edit.state].strategy != S_HASH:
                continue
            out = self.hash_function(PyBytes_FromStringAndSize(<const char*>p + edit.start, edit.end - edit.start))
            if not PyBytes_Check(out):
                raise _py._hash_not_bytes(out)
            status = _valid(<const unsigned char*>PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out), self.max_depth)
            if status == NO_MEMORY:
                raise MemoryError()
            if status == INVALID:
                raise _py._hash_not_json(out)
            hashes.append(out)
            edit.text = <const unsigned char*>PyBytes_AS_STRING(out)
            edit.size = PyBytes_GET_SIZE(out)
        if _write_edits(p, size, w, output) < 0:
            raise MemoryError()
        return 0


cdef void _start_walk(const MaskPlan* plan, Walk* w, Edit* local_edits, unsigned char* local_kinds,
                      Frame* local_frames) noexcept nogil:
    """Ready w for a walk under plan with the caller's local buffers."""
    memset(w, 0, sizeof(Walk))
    w.plan = plan
    w.states = plan.states
    w.members = plan.members
    w.elements = plan.elements
    w.root = 0 if plan.states[0].objects or plan.states[0].arrays else -1
    w.max_depth = plan.max_depth
    w.edits = local_edits
    w.edit_capacity = LOCAL_EDITS
    w.kinds = local_kinds
    w.kind_capacity = LOCAL_KINDS
    w.frames = local_frames
    w.frame_capacity = LOCAL_FRAMES


cdef void _end_walk(Walk* w) noexcept nogil:
    if w.kinds_owned:
        free(w.kinds)
    if w.edits_owned:
        free(w.edits)
    if w.frames_owned:
        free(w.frames)


cdef int _mask_plain(const void* context, const unsigned char* p, Py_ssize_t size, MaskOutput* out) noexcept nogil:
    """A VALUE_* answer for p[:size] under a MaskPlan whose `hash` rules (if any) make Pseudonyms,
    so with no Python and no GIL; the masked bytes are appended to out (VALUE_MASKED). -1: out of
    memory."""
    cdef Walk w
    cdef Edit local_edits[LOCAL_EDITS]
    cdef unsigned char local_kinds[LOCAL_KINDS]
    cdef Frame local_frames[LOCAL_FRAMES]
    cdef int status
    _start_walk(<const MaskPlan*>context, &w, local_edits, local_kinds, local_frames)
    status = _walk_answer(&w, p, size)
    if status == VALUE_MASKED and _write_edits(p, size, &w, out) < 0:
        status = -1
    _end_walk(&w)
    return status


cdef int _walk_answer(Walk* w, const unsigned char* p, Py_ssize_t size) noexcept nogil:
    """Walks p[:size]: the VALUE_* answer, VALUE_MASKED meaning w's edits are still to be written;
    -1: out of memory."""
    cdef int status = _walk(w, p, size)
    if status == NO_MEMORY:
        return -1
    if status == INVALID:
        return VALUE_INVALID
    if w.fallback:
        return VALUE_FALLBACK
    return VALUE_MASKED if w.edit_count else VALUE_KEPT


cdef int _write_edits(const unsigned char* p, Py_ssize_t size, Walk* w, MaskOutput* output) noexcept nogil:
    """Appends p[:size] with w's edits made to output (a hash edit's text and size already set,
    unless the plan makes Pseudonyms); -1: out of memory."""
    cdef Py_ssize_t i, done = 0, total = size
    cdef Edit* edit
    cdef const State* e
    cdef unsigned char* o
    for i in range(w.edit_count):
        edit = &w.edits[i]
        if edit.state < 0:
            edit.size = 0
        else:
            e = &w.states[edit.state]
            if e.strategy == S_REDACT:
                edit.size = e.replacement_size
            elif e.strategy == S_NULL:
                edit.size = 4
            elif e.strategy != S_HASH:
                _keep(p, edit, e.n, e.strategy == S_KEEP_LAST)
            elif w.plan.pseudonyms:
                edit.size = PSEUDONYM_SIZE
        total += edit.size - (edit.end - edit.start)
    o = reserve(output, total)
    if o == NULL:
        return -1
    output.size += total
    for i in range(w.edit_count):
        edit = &w.edits[i]
        memcpy(o, p + done, edit.start - done)
        o += edit.start - done
        done = edit.end
        if edit.state < 0:
            continue
        e = &w.states[edit.state]
        if e.strategy == S_REDACT:
            memcpy(o, e.replacement, e.replacement_size)
        elif e.strategy == S_NULL:
            memcpy(o, b"null", 4)
        elif e.strategy == S_HASH:
            if w.plan.pseudonyms:
                bg_pseudonym(w.plan.hmac_inner, w.plan.hmac_outer, p + edit.start, edit.end - edit.start, o)
            else:
                memcpy(o, edit.text, edit.size)
        else:
            o[0] = 0x22
            if e.strategy == S_KEEP_LAST:
                memset(o + 1, 0x2A, edit.stars)
                memcpy(o + 1 + edit.stars, p + edit.keep_from, edit.keep_to - edit.keep_from)
            else:
                memcpy(o + 1, p + edit.keep_from, edit.keep_to - edit.keep_from)
                memset(o + 1 + edit.keep_to - edit.keep_from, 0x2A, edit.stars)
            o[edit.size - 1] = 0x22
        o += edit.size
    memcpy(o, p + done, size - done)
    return 0


cdef int _mask_value(object masker, const unsigned char* p, Py_ssize_t n, MaskOutput* out) except -1:
    if type(masker) is not FieldMasker:  # the capsule handed on with some other object
        raise TypeError(f"native_mask_value needs its FieldMasker, not {type(masker).__name__}")
    return (<FieldMasker>masker)._mask_into(p, n, out)



def _sha_extensions(bint on):
    """For the tests: whether Pseudonyms use the CPU's SHA extensions, where it has them (the
    portable code otherwise); the previous setting."""
    return bool(bg_sha_extensions(on))

_MASK_VALUE = PyCapsule_New(<void*>_mask_value, CAPSULE, NULL)
