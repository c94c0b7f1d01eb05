# cython: language_level=3
"""How the record core asks a compiled masker for one value, with no Python object per record.

A masker module publishes a MaskValue function in a capsule named CAPSULE (jsonmask's
FieldMasker does, as its `native_mask_value`); Batch.with_masked_values calls it on each value
in place and gets the masked bytes appended to one growing MaskOutput. A MaskPlain in a
PLAIN_CAPSULE is the same without Python, called with the GIL released. Header only: nothing
here is imported at run time.
"""
from libc.stdlib cimport realloc

cdef extern from *:
    """
    #define BG_MASK_VALUE_CAPSULE "brokerguard._native.MaskValue"
    #define BG_MASK_PLAIN_CAPSULE "brokerguard._native.MaskPlain"
    """
    const char* CAPSULE "BG_MASK_VALUE_CAPSULE"
    const char* PLAIN_CAPSULE "BG_MASK_PLAIN_CAPSULE"


ctypedef struct MaskOutput:
    unsigned char* data  # malloc'ed; whoever made the MaskOutput frees it
    Py_ssize_t size
    Py_ssize_t capacity


cdef enum:
    VALUE_KEPT = 0  # no rule matched: the value stays as it is
    VALUE_MASKED = 1  # the masked value was appended to the output
    VALUE_INVALID = 2  # not one JSON document: only the caller's general path can tell what to do
    VALUE_FALLBACK = 3  # valid, but a match only the general path can mask exactly


# Appends the masked value of p[:n] to out when it answers VALUE_MASKED; raises what masking
# raises (a hash function's error, MemoryError).
ctypedef int (*MaskValue)(object masker, const unsigned char* p, Py_ssize_t n, MaskOutput* out) except -1

# The same for a masker that calls no Python (jsonmask's FieldMasker without `hash` rules, as its
# `native_mask_plain`): callable without the GIL, so the record core masks a batch with the GIL
# released. The capsule's context is the masker's compiled rules, alive as long as the masker.
# -1: out of memory.
ctypedef int (*MaskPlain)(const void* context, const unsigned char* p, Py_ssize_t n,
                          MaskOutput* out) noexcept nogil


cdef inline unsigned char* reserve(MaskOutput* out, Py_ssize_t more) noexcept nogil:
    """Where `more` bytes may be written after out.size, growing the buffer; NULL: no memory."""
    cdef Py_ssize_t capacity = out.capacity
    cdef unsigned char* grown
    if out.size + more > capacity:
        capacity = 2 * capacity if capacity else 4096
        while capacity < out.size + more:
            capacity *= 2
        grown = <unsigned char*>realloc(out.data, capacity)
        if grown == NULL:
            return NULL
        out.data = grown
        out.capacity = capacity
    return out.data + out.size
