# cython: language_level=3
"""JSON tokens (RFC 8259) read straight from UTF-8 bytes, shared by the walkers over JSON.

Each function is inlined where it is used, so the compiled walkers pay no call for a token.
The grammar they accept is written out at the top of jsonmask.pyx.
"""
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset


cdef inline bint _plain(unsigned char c) noexcept nogil:
    """A byte that a string holds as is: ASCII from 0x20 but " and \\."""
    return 0x20 <= c < 0x80 and c != 0x22 and c != 0x5C


cdef inline bint _hex(unsigned char c) noexcept nogil:
    return <unsigned char>(c - 0x30) <= 9 or <unsigned char>((c | 0x20) - 0x61) <= 5


# Tokens. Each takes the position where its token starts (strings: after the opening quote) and
# returns the position after it, or -1 if the bytes there are not that token.


cdef inline Py_ssize_t _ws(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    cdef unsigned char c
    while pos < n:
        c = p[pos]
        if c > 0x20 or (c != 0x20 and c != 0x0A and c != 0x0D and c != 0x09):
            break
        pos += 1
    return pos


cdef extern from *:
    """
    /* How many of the 8 bytes loaded in `flags` (in memory order) come before the first one
       flagged by its high bit; 0 where that is not cheap to tell (the caller then looks at the
       bytes one by one). Borrows run towards the more significant bytes, so the least
       significant flag is exact; on a little-endian machine that is the first byte. */
    #define BG_ONES 0x0101010101010101ULL
    #define BG_HIGHS 0x8080808080808080ULL
    static inline int bg_before_first_flag(uint64_t flags) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        return __builtin_ctzll(flags) >> 3;
    #else
        (void)flags;
        return 0;
    #endif
    }
    """
    const uint64_t ONES "BG_ONES"
    const uint64_t HIGHS "BG_HIGHS"
    int bg_before_first_flag(uint64_t flags) noexcept nogil


cdef extern from *:
    """
    /* How many of the 16 bytes at p come before the first that ends a run of plain string bytes
       (below 0x20, a quote, a backslash, non-ASCII); 16 if none. Compared as signed bytes,
       non-ASCII ones are below 0x20 too. SSE2 is part of every x86-64 (__builtin_ctz needs GCC or
       Clang); elsewhere this says 16 and the 8-byte scan does the work. */
    #if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
    #include <emmintrin.h>
    #define BG_SPECIAL16 1
    static inline int bg_special16(const unsigned char* p) {
        __m128i x = _mm_loadu_si128((const __m128i*)p);
        __m128i special = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x22)), _mm_cmpeq_epi8(x, _mm_set1_epi8(0x5C))),
            _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)));
        unsigned int mask = (unsigned int)_mm_movemask_epi8(special);
        return mask ? __builtin_ctz(mask) : 16;
    }
    #else
    #define BG_SPECIAL16 0
    static inline int bg_special16(const unsigned char* p) { (void)p; return 16; }
    #endif
    """
    const bint SPECIAL16 "BG_SPECIAL16"
    int bg_special16(const unsigned char* p) noexcept nogil


cdef inline uint64_t _special8(uint64_t x) noexcept nogil:
    """The high bit of each of 8 bytes that is below 0x20, a quote, a backslash or non-ASCII
    (exact up to the first such byte; bits after it may be wrong)."""
    cdef uint64_t quote = x ^ (ONES * 0x22)
    cdef uint64_t backslash = x ^ (ONES * 0x5C)
    return (((x - ONES * 0x20) & ~x) | ((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash) | x) & HIGHS


cdef inline Py_ssize_t _utf8(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    """Past the multi-byte UTF-8 sequence at pos (shortest form, no surrogate, <= U+10FFFF)."""
    cdef unsigned char c = p[pos]
    cdef unsigned char low = 0x80, high = 0xBF
    if c < 0xC2:
        return -1
    if c < 0xE0:
        if pos + 1 < n and p[pos + 1] & 0xC0 == 0x80:
            return pos + 2
        return -1
    if c < 0xF0:
        if c == 0xE0:
            low = 0xA0
        elif c == 0xED:
            high = 0x9F
        if pos + 2 < n and low <= p[pos + 1] <= high and p[pos + 2] & 0xC0 == 0x80:
            return pos + 3
        return -1
    if c < 0xF5:
        if c == 0xF0:
            low = 0x90
        elif c == 0xF4:
            high = 0x8F
        if (pos + 3 < n and low <= p[pos + 1] <= high and p[pos + 2] & 0xC0 == 0x80
                and p[pos + 3] & 0xC0 == 0x80):
            return pos + 4
        return -1
    return -1


cdef inline Py_ssize_t _string(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n,
                               bint* escaped=NULL) noexcept nogil:
    """escaped, if given, is set when the string holds a backslash escape (and left alone if not)."""
    cdef uint64_t x, flags
    cdef unsigned char c
    cdef int skip
    while True:
        # 16 bytes a step, then 8, then one: nothing past the end of the document is read.
        skip = 16
        if SPECIAL16:
            while pos + 16 <= n:
                skip = bg_special16(p + pos)
                pos += skip
                if skip < 16:
                    break
        if skip == 16:
            while pos + 8 <= n:
                memcpy(&x, p + pos, 8)
                flags = _special8(x)
                if flags:
                    pos += bg_before_first_flag(flags)
                    break
                pos += 8
            while pos < n and _plain(p[pos]):
                pos += 1
        if pos >= n:
            return -1
        c = p[pos]
        if c == 0x22:
            return pos + 1
        if c == 0x5C:
            if pos + 1 >= n:
                return -1
            if escaped != NULL:
                escaped[0] = True
            c = p[pos + 1]
            if c == 0x75:  # u
                if (pos + 5 >= n or not _hex(p[pos + 2]) or not _hex(p[pos + 3]) or not _hex(p[pos + 4])
                        or not _hex(p[pos + 5])):
                    return -1
                pos += 6
            elif (c == 0x22 or c == 0x5C or c == 0x2F or c == 0x62 or c == 0x66 or c == 0x6E or c == 0x72
                    or c == 0x74):
                pos += 2
            else:
                return -1
        elif c < 0x20:
            return -1
        else:
            pos = _utf8(p, pos, n)
            if pos < 0:
                return -1


cdef inline Py_ssize_t _digits(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    """Past one or more digits at pos, or -1."""
    if pos >= n or <unsigned char>(p[pos] - 0x30) > 9:
        return -1
    pos += 1
    while pos < n and <unsigned char>(p[pos] - 0x30) <= 9:
        pos += 1
    return pos


cdef inline Py_ssize_t _number(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    if p[pos] == 0x2D:  # -
        pos += 1
        if pos >= n:
            return -1
    if p[pos] == 0x30:
        pos += 1
    else:
        pos = _digits(p, pos, n)
        if pos < 0:
            return -1
    if pos < n and p[pos] == 0x2E:  # .
        pos = _digits(p, pos + 1, n)
        if pos < 0:
            return -1
    if pos < n and p[pos] | 0x20 == 0x65:  # e E
        pos += 1
        if pos < n and (p[pos] == 0x2B or p[pos] == 0x2D):
            pos += 1
        pos = _digits(p, pos, n)
    return pos


cdef inline Py_ssize_t _literal(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    cdef const unsigned char* word
    cdef Py_ssize_t size
    if p[pos] == 0x74:
        word = <const unsigned char*>b"true"
        size = 4
    elif p[pos] == 0x66:
        word = <const unsigned char*>b"false"
        size = 5
    else:
        word = <const unsigned char*>b"null"
        size = 4
    if n - pos >= size and _same(p + pos, word, size):
        return pos + size
    return -1


# Keys


cdef inline bint _same(const unsigned char* a, const unsigned char* b, Py_ssize_t size) noexcept nogil:
    """memcmp(a, b, size) == 0 without a call into libc: keys, enum texts and literals are short,
    and a document compares several per record."""
    cdef Py_ssize_t i
    for i in range(size):
        if a[i] != b[i]:
            return False
    return True


cdef inline void _key_word(const unsigned char* name, Py_ssize_t size, uint64_t* word,
                           uint64_t* mask) noexcept nogil:
    """For _key_is: name's first 8 bytes (zeros past its end), and which of them it has."""
    cdef unsigned char w[8]
    cdef unsigned char m[8]
    cdef Py_ssize_t k = size if size < 8 else 8
    memset(w, 0, 8)
    memset(m, 0, 8)
    memcpy(w, name, k)
    memset(m, 0xFF, k)
    memcpy(word, w, 8)
    memcpy(mask, m, 8)


cdef inline bint _key_is(const unsigned char* key, Py_ssize_t size, Py_ssize_t readable,
                         const unsigned char* name, uint64_t word, uint64_t mask) noexcept nogil:
    """Whether the size bytes at key are those of name, which is as long (word and mask from
    _key_word). Where `readable` bytes from key allow it, the first 8 are one comparison: no
    loop whose length changes from key to key, so no branch to mispredict."""
    cdef uint64_t x
    if readable >= 8:
        memcpy(&x, key, 8)
        return (x ^ word) & mask == 0 and (size <= 8 or _same(key + 8, name + 8, size - 8))
    return _same(key, name, size)


cdef inline uint32_t _hex4(const unsigned char* p) noexcept nogil:
    cdef uint32_t value = 0
    cdef int i
    cdef unsigned char c
    for i in range(4):
        c = p[i] | 0x20
        value = (value << 4) | <uint32_t>(c - 0x30 if c <= 0x39 else c - 0x61 + 10)
    return value


cdef inline bint _escaped_key_is(const unsigned char* key, Py_ssize_t size, const unsigned char* name,
                          Py_ssize_t name_size) noexcept nogil:
    """Whether a valid key with escapes (between its quotes) decodes to the bytes of name."""
    cdef Py_ssize_t i = 0, j = 0, k
    cdef uint32_t code, low
    cdef unsigned char c
    cdef unsigned char buf[4]
    while i < size:
        c = key[i]
        if c != 0x5C:
            if j >= name_size or name[j] != c:
                return False
            i += 1
            j += 1
            continue
        c = key[i + 1]
        if c != 0x75:
            if c == 0x62:
                c = 0x08
            elif c == 0x66:
                c = 0x0C
            elif c == 0x6E:
                c = 0x0A
            elif c == 0x72:
                c = 0x0D
            elif c == 0x74:
                c = 0x09
            if j >= name_size or name[j] != c:
                return False
            i += 2
            j += 1
            continue
        code = _hex4(key + i + 2)
        i += 6
        if 0xD800 <= code < 0xDC00 and i + 6 <= size and key[i] == 0x5C and key[i + 1] == 0x75:
            low = _hex4(key + i + 2)
            if 0xDC00 <= low < 0xE000:
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                i += 6
        if code < 0x80:
            buf[0] = code
            k = 1
        elif code < 0x800:
            buf[0] = 0xC0 | (code >> 6)
            buf[1] = 0x80 | (code & 0x3F)
            k = 2
        elif code < 0x10000:
            buf[0] = 0xE0 | (code >> 12)
            buf[1] = 0x80 | ((code >> 6) & 0x3F)
            buf[2] = 0x80 | (code & 0x3F)
            k = 3
        else:
            buf[0] = 0xF0 | (code >> 18)
            buf[1] = 0x80 | ((code >> 12) & 0x3F)
            buf[2] = 0x80 | ((code >> 6) & 0x3F)
            buf[3] = 0x80 | (code & 0x3F)
            k = 4
        if name_size - j < k or not _same(name + j, buf, k):
            return False
        j += k
    return j == name_size
