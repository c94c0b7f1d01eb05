# cython: language_level=3
"""The `hash` strategy's pseudonym, made without Python: `"h:` and 32 hex digits `"`, the first 16
bytes of HMAC-SHA256 (RFC 2104, FIPS 180-4) of a JSON string literal under the profile's key.

engine/content/masking.py's _Pseudonyms.literal makes the same bytes with Python's hmac; the
tests compare the two. The key's inner and outer states are computed once (bg_hmac_prepare), so
a short literal costs two SHA-256 blocks.
"""
from libc.stdint cimport uint32_t


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static const uint32_t BG_SHA256_K[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    static const uint32_t BG_SHA256_IV[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

    #define BG_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

    static void bg_sha256_block_c(uint32_t s[8], const unsigned char* p) {
        uint32_t w[64], a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
        int i;
        for (i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
        for (i = 16; i < 64; i++)
            w[i] = w[i - 16] + (BG_ROR(w[i - 15], 7) ^ BG_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 7]
                   + (BG_ROR(w[i - 2], 17) ^ BG_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10));
        for (i = 0; i < 64; i++) {
            uint32_t t1 = h + (BG_ROR(e, 6) ^ BG_ROR(e, 11) ^ BG_ROR(e, 25)) + ((e & f) ^ (~e & g))
                          + BG_SHA256_K[i] + w[i];
            uint32_t t2 = (BG_ROR(a, 2) ^ BG_ROR(a, 13) ^ BG_ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
    }

    /* The same block with the x86 SHA extensions (about ten times faster), where the CPU has
       them: four rounds a step, the message schedule by sha256msg1/msg2. */
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <cpuid.h>
    #include <immintrin.h>
    #define BG_SHA_NI 1
    __attribute__((target("sha,sse4.1,ssse3")))
    static void bg_sha256_block_ni(uint32_t s[8], const unsigned char* p) {
        const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
        __m128i w[16], msg, tmp, abef, cdgh, abef_in, cdgh_in;
        int i;
        tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i*)s), 0xB1);       /* C D A B */
        cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i*)(s + 4)), 0x1B); /* H G F E */
        abef = _mm_alignr_epi8(tmp, cdgh, 8);
        cdgh = _mm_blend_epi16(cdgh, tmp, 0xF0);
        abef_in = abef;
        cdgh_in = cdgh;
        for (i = 0; i < 16; i++) {
            if (i < 4)
                w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i*)(p + 16 * i)), swap);
            else
                w[i] = _mm_sha256msg2_epu32(
                    _mm_add_epi32(_mm_sha256msg1_epu32(w[i - 4], w[i - 3]), _mm_alignr_epi8(w[i - 1], w[i - 2], 4)),
                    w[i - 1]);
            msg = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i*)(BG_SHA256_K + 4 * i)));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, msg);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(msg, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef_in);
        cdgh = _mm_add_epi32(cdgh, cdgh_in);
        tmp = _mm_shuffle_epi32(abef, 0x1B);                                       /* F E B A */
        cdgh = _mm_shuffle_epi32(cdgh, 0xB1);                                      /* D C H G */
        _mm_storeu_si128((__m128i*)s, _mm_blend_epi16(tmp, cdgh, 0xF0));          /* D C B A */
        _mm_storeu_si128((__m128i*)(s + 4), _mm_alignr_epi8(cdgh, tmp, 8));       /* H G F E */
    }

    static int bg_cpu_has_sha(void) {
        unsigned int a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
            return 0;
        return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
    }
    #else
    #define BG_SHA_NI 0
    static void bg_sha256_block_ni(uint32_t s[8], const unsigned char* p) { bg_sha256_block_c(s, p); }
    static int bg_cpu_has_sha(void) { return 0; }
    #endif

    /* 1: the SHA extensions, 0: portable C, -1: not decided yet (benign race: same answer). */
    static int bg_use_sha_ni = -1;

    static int bg_sha_ni(void) {
        if (bg_use_sha_ni < 0)
            bg_use_sha_ni = bg_cpu_has_sha();
        return bg_use_sha_ni;
    }

    static void bg_sha256_block(uint32_t s[8], const unsigned char* p) {
        if (bg_sha_ni())
            bg_sha256_block_ni(s, p);
        else
            bg_sha256_block_c(s, p);
    }

    /* For the tests: whether blocks go through the SHA extensions (where the CPU has them);
       returns the previous setting. */
    static int bg_sha_extensions(int on) {
        int before = bg_sha_ni();
        bg_use_sha_ni = on && bg_cpu_has_sha();
        return before;
    }

    /* The SHA-256 digest of p[:n] following `before` bytes already hashed into s. */
    static void bg_sha256_finish(uint32_t s[8], uint64_t before, const unsigned char* p, size_t n,
                                 unsigned char out[32]) {
        unsigned char last[128];
        uint64_t bits = (before + n) * 8;
        size_t rest, tail;
        int i;
        for (; n >= 64; p += 64, n -= 64)
            bg_sha256_block(s, p);
        memset(last, 0, sizeof last);
        memcpy(last, p, n);
        last[n] = 0x80;
        tail = n + 9 <= 64 ? 64 : 128;
        for (i = 0; i < 8; i++)
            last[tail - 1 - i] = (unsigned char)(bits >> (8 * i));
        for (rest = 0; rest < tail; rest += 64)
            bg_sha256_block(s, last + rest);
        for (i = 0; i < 8; i++) {
            out[4 * i] = (unsigned char)(s[i] >> 24);
            out[4 * i + 1] = (unsigned char)(s[i] >> 16);
            out[4 * i + 2] = (unsigned char)(s[i] >> 8);
            out[4 * i + 3] = (unsigned char)s[i];
        }
    }

    /* The states after a key's inner and outer padded blocks (a key longer than a block is
       hashed first, as RFC 2104 says). */
    static void bg_hmac_prepare(const unsigned char* key, size_t n, uint32_t inner[8], uint32_t outer[8]) {
        unsigned char block[64], pad[64];
        uint32_t s[8];
        int i;
        memset(block, 0, sizeof block);
        if (n > 64) {
            memcpy(s, BG_SHA256_IV, sizeof s);
            bg_sha256_finish(s, 0, key, n, block);
        } else {
            memcpy(block, key, n);
        }
        for (i = 0; i < 64; i++)
            pad[i] = block[i] ^ 0x36;
        memcpy(inner, BG_SHA256_IV, 32);
        bg_sha256_block(inner, pad);
        for (i = 0; i < 64; i++)
            pad[i] = block[i] ^ 0x5c;
        memcpy(outer, BG_SHA256_IV, 32);
        bg_sha256_block(outer, pad);
    }

    /* Writes the 36 bytes "h:<32 hex>" (quotes included) for the literal p[:n]. */
    static void bg_pseudonym(const uint32_t inner[8], const uint32_t outer[8], const unsigned char* p, size_t n,
                             unsigned char out[36]) {
        static const char hex[] = "0123456789abcdef";
        unsigned char digest[32];
        uint32_t s[8];
        int i;
        memcpy(s, inner, sizeof s);
        bg_sha256_finish(s, 64, p, n, digest);
        memcpy(s, outer, sizeof s);
        bg_sha256_finish(s, 64, digest, 32, digest);
        out[0] = '"';
        out[1] = 'h';
        out[2] = ':';
        for (i = 0; i < 16; i++) {
            out[3 + 2 * i] = hex[digest[i] >> 4];
            out[4 + 2 * i] = hex[digest[i] & 15];
        }
        out[35] = '"';
    }
    """
    void bg_hmac_prepare(const unsigned char* key, size_t n, uint32_t* inner, uint32_t* outer) noexcept nogil
    void bg_pseudonym(const uint32_t* inner, const uint32_t* outer, const unsigned char* p, size_t n,
                      unsigned char* out) noexcept nogil
    int bg_sha_extensions(int on) noexcept nogil


cdef enum:
    PSEUDONYM_SIZE = 36  # "h:" and 32 hex digits, quoted
