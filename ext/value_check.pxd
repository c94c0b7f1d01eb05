# cython: language_level=3
"""How the record core asks a compiled checker whether one value surely passes, in place.

A checker publishes a CheckValue function in a capsule named CHECK_CAPSULE, its context the
checker's compiled plan (jsoncheck's SchemaCheck does, as its `native_check_value`).
Records.values_pass calls it on each value's bytes where they lie in the decoded batch, with no
bytes object per record. The context lives as long as the checker, which the caller holds.
Header only: nothing here is imported at run time.
"""

cdef extern from *:
    """
    #define BG_CHECK_VALUE_CAPSULE "brokerguard._native.CheckValue"
    """
    const char* CHECK_CAPSULE "BG_CHECK_VALUE_CAPSULE"


# Whether p[:n] surely passes (False: not sure, the caller asks its general path). Called with
# the GIL held: a checker may hand a string to Python (a `pattern`). Never raises.
ctypedef bint (*CheckValue)(const void* context, const unsigned char* p, Py_ssize_t n) noexcept
