// AVX-512 chunk decoder (F + BW + VL): the AVX2 decoder's algorithm with 16 lanes per vector. Mask registers
// replace the AVX2 tricks: the lanes needing a renormalisation word are a compare mask, the words reach them by
// vpexpandd (the prefix permutation in one instruction), and a raw bit-plane is OR-ed into 32 bytes through
// its own bits as a byte mask. Must match decode_chunk_scalar bit for bit (tests run every decoder built).
#include "chunk_view.h"
#include "codec.h"
#include "simd_driver.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>

namespace nz::avx512 {
namespace {

struct Lanes {
  __m512i st[2];
  uint64_t pos;
};

struct Acc {
  __m512i v[2];
};

inline __m512i load_words(const FieldView& f, uint64_t pos) {
  if (__builtin_expect(pos + 16 <= f.n_words, 1))
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(f.data + 2 * pos)));
  alignas(64) uint32_t tmp[16];   // the stream's last words: never read past it (missing words read as 0,
  for (int i = 0; i < 16; i++) {  // caught by the final state check)
    uint16_t h = 0;
    if (pos + i < f.n_words) __builtin_memcpy(&h, f.data + 2 * (pos + i), 2);
    tmp[i] = h;
  }
  return _mm512_load_si512(tmp);
}

// One step (32 symbols) of one coded field: both vectors' symbol decodes first, then their word loads, so only
// the popcount chains the two.
inline void rans_step(Lanes& L, const FieldView& f, Acc& acc) {
  const __m512i slot_mask = _mm512_set1_epi32(kProbScale - 1), m7ff = _mm512_set1_epi32(0x7FF);
  const __m512i one = _mm512_set1_epi32(1), m3ff = _mm512_set1_epi32(0x3FF), low = _mm512_set1_epi32(kRansL);
  const __m128i shift = _mm_cvtsi32_si128(f.shift);
  __m512i x[2];
  __mmask16 need[2];
  for (int v = 0; v < 2; v++) {
    __m512i e = _mm512_i32gather_epi32(_mm512_and_si512(L.st[v], slot_mask), f.table, 4);
    __m512i freq = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e, 10), m7ff), one);
    x[v] = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32(L.st[v], kProbBits)), _mm512_srli_epi32(e, 21));
    acc.v[v] = _mm512_or_si512(acc.v[v], _mm512_sll_epi32(_mm512_and_si512(e, m3ff), shift));
    need[v] = _mm512_cmplt_epu32_mask(x[v], low);
  }
  uint64_t pos = L.pos;
  for (int v = 0; v < 2; v++) {
    __m512i w = _mm512_maskz_expand_epi32(need[v], load_words(f, pos));
    L.st[v] = _mm512_mask_or_epi32(x[v], need[v], _mm512_slli_epi32(x[v], 16), w);
    pos += unsigned(__builtin_popcount(unsigned(need[v])));
  }
  L.pos = pos;
}

// Bit-planes [b0, b1) of one group of 32 elements -> byte l = those bits of element l.
inline __m256i planes_to_bytes(const uint8_t* words, int b0, int b1) {
  __m256i out = _mm256_setzero_si256();
  for (int b = b0; b < b1; b++) {
    uint32_t w;
    __builtin_memcpy(&w, words + 4 * b, 4);
    out = _mm256_mask_mov_epi8(out, __mmask32(w), _mm256_or_si256(out, _mm256_set1_epi8(char(1 << (b - b0)))));
  }
  return out;
}

inline void widen_or(__m256i bytes, int shift, Acc& acc) {
  const __m128i s = _mm_cvtsi32_si128(shift);
  acc.v[0] = _mm512_or_si512(acc.v[0], _mm512_sll_epi32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes)), s));
  acc.v[1] = _mm512_or_si512(acc.v[1], _mm512_sll_epi32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1)), s));
}

inline void store_step(const DecodeTarget& t, uint64_t step, Acc& acc) {
  const __m128i drop = _mm_cvtsi32_si128(t.drop);
  for (int v = 0; v < 2; v++) acc.v[v] = _mm512_sll_epi32(acc.v[v], drop);
  if (t.elem_bytes == 2) {
    auto* o = reinterpret_cast<__m256i*>(t.dst + step * kLanes * 2);
    _mm256_storeu_si256(o, _mm512_cvtepi32_epi16(acc.v[0]));
    _mm256_storeu_si256(o + 1, _mm512_cvtepi32_epi16(acc.v[1]));
  } else {
    auto* o = reinterpret_cast<__m512i*>(t.dst + step * kLanes * 4);
    _mm512_storeu_si512(o, acc.v[0]);
    _mm512_storeu_si512(o + 1, acc.v[1]);
  }
}

struct Isa {
  using Lanes = avx512::Lanes;
  using Acc = avx512::Acc;
  static Acc zero() { return {{_mm512_setzero_si512(), _mm512_setzero_si512()}}; }
  static void rans_step(Lanes& l, const FieldView& f, Acc& acc) { avx512::rans_step(l, f, acc); }
  static __m256i load_bytes(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static __m256i planes_to_bytes(const uint8_t* p, int b0, int b1) { return avx512::planes_to_bytes(p, b0, b1); }
  static void widen_or(__m256i bytes, int shift, Acc& acc) { avx512::widen_or(bytes, shift, acc); }
  static void store(const DecodeTarget& t, uint64_t step, Acc& acc) { store_step(t, step, acc); }
  static void load_states(Lanes& l, const uint8_t* p) {
    for (int v = 0; v < 2; v++) l.st[v] = _mm512_loadu_si512(p + 64 * v);
  }
  static void store_states(const Lanes& l, uint32_t* st) {
    for (int v = 0; v < 2; v++) _mm512_storeu_si512(st + 16 * v, l.st[v]);
  }
};

}  // namespace

bool available() { return true; }
void decode_one(const ChunkView& c, const DecodeTarget& t) { simd::decode_one<Isa>(c, t); }
void decode_pair(const ChunkView& a, const DecodeTarget& ta, const ChunkView& b, const DecodeTarget& tb) {
  simd::decode_pair<Isa>(a, ta, b, tb);
}

}  // namespace nz::avx512

#else

namespace nz::avx512 {
bool available() { return false; }
void decode_one(const ChunkView&, const DecodeTarget&) { throw std::logic_error("no AVX-512 decoder"); }
void decode_pair(const ChunkView&, const DecodeTarget&, const ChunkView&, const DecodeTarget&) {
  throw std::logic_error("no AVX-512 decoder");
}
}  // namespace nz::avx512

#endif
