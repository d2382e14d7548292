// AVX2 chunk decoder: all fields of a step of 32 elements are decoded and merged in registers and written once
// as final values. rANS runs 8 lanes per vector; the renormalisation words of a vector are handed to its lanes
// in lane order by a prefix permutation (what a warp does with ballot + popc). Raw bit-planes become bytes by a
// shuffle + compare. Must match decode_chunk_scalar bit for bit (tests run both).
#include "chunk_view.h"
#include "codec.h"
#include "simd_driver.h"

#if defined(__AVX2__)
#include <immintrin.h>

namespace nz::avx2 {
namespace {

struct ExpandTable {  // for an 8-lane need-mask m: lane i takes word rank_m(i) of the next 8
  alignas(32) int32_t idx[256][8];
  ExpandTable() {
    for (int m = 0; m < 256; m++) {
      int k = 0;
      for (int i = 0; i < 8; i++) idx[m][i] = (m >> i & 1) ? k++ : 0;
    }
  }
};
const ExpandTable kExpand;

struct VecLanes {
  __m256i st[4];
  uint64_t pos;
};

struct Acc {
  __m256i v[4];
};

inline __m256i load_words(const FieldView& f, uint64_t pos) {
  if (__builtin_expect(pos + 8 <= f.n_words, 1))
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(f.data + 2 * pos)));
  alignas(32) uint32_t tmp[8];   // the stream's last words: never read past it (missing words read as 0,
  for (int i = 0; i < 8; i++) {  // caught by the final state check)
    uint16_t h = 0;
    if (pos + i < f.n_words) __builtin_memcpy(&h, f.data + 2 * (pos + i), 2);
    tmp[i] = h;
  }
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
}

// One step (32 symbols) of one coded field. The four vectors' symbol decodes are independent; only the word
// positions chain through the popcounts, so all decodes go first, then the loads: the critical path per
// step is one gather-decode-load round trip, not four.
inline void rans_vec_step(VecLanes& L, const FieldView& f, Acc& acc) {
  const __m256i slot_mask = _mm256_set1_epi32(kProbScale - 1), m7ff = _mm256_set1_epi32(0x7FF);
  const __m256i one = _mm256_set1_epi32(1), m3ff = _mm256_set1_epi32(0x3FF);
  const __m256i flip = _mm256_set1_epi32(int32_t(0x80000000u));
  const __m256i l_flipped = _mm256_set1_epi32(int32_t(kRansL ^ 0x80000000u));
  const __m128i shift = _mm_cvtsi32_si128(f.shift);
  __m256i x[4], need[4];
  int m[4];
  for (int v = 0; v < 4; v++) {
    __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(f.table), _mm256_and_si256(L.st[v], slot_mask), 4);
    __m256i freq = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(e, 10), m7ff), one);
    x[v] = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srli_epi32(L.st[v], kProbBits)), _mm256_srli_epi32(e, 21));
    acc.v[v] = _mm256_or_si256(acc.v[v], _mm256_sll_epi32(_mm256_and_si256(e, m3ff), shift));
    need[v] = _mm256_cmpgt_epi32(l_flipped, _mm256_xor_si256(x[v], flip));  // unsigned x < kRansL
    m[v] = _mm256_movemask_ps(_mm256_castsi256_ps(need[v]));
  }
  uint64_t pos = L.pos;
  for (int v = 0; v < 4; v++) {
    __m256i w = _mm256_permutevar8x32_epi32(load_words(f, pos),
                                            _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.idx[m[v]])));
    L.st[v] = _mm256_blendv_epi8(x[v], _mm256_or_si256(_mm256_slli_epi32(x[v], 16), w), need[v]);
    pos += unsigned(__builtin_popcount(unsigned(m[v])));
  }
  L.pos = pos;
}

// Bit-planes [b0, b1) of one group of 32 elements -> byte l = those bits of element l.
inline __m256i planes_to_bytes(const uint8_t* words, int b0, int b1) {
  // byte l of the broadcast word is byte l/8 of the plane; shuffle_epi8 indexes within each 128-bit half.
  const __m256i pick =
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
  __m256i out = _mm256_setzero_si256();
  for (int b = b0; b < b1; b++) {
    uint32_t w;
    __builtin_memcpy(&w, words + 4 * b, 4);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int32_t(w)), pick);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    out = _mm256_or_si256(out, _mm256_and_si256(set, _mm256_set1_epi8(char(1 << (b - b0)))));
  }
  return out;
}

inline void widen_or(__m256i bytes, int shift, Acc& acc) {
  const __m128i s = _mm_cvtsi32_si128(shift);
  const __m128i lo = _mm256_castsi256_si128(bytes), hi = _mm256_extracti128_si256(bytes, 1);
  acc.v[0] = _mm256_or_si256(acc.v[0], _mm256_sll_epi32(_mm256_cvtepu8_epi32(lo), s));
  acc.v[1] = _mm256_or_si256(acc.v[1], _mm256_sll_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), s));
  acc.v[2] = _mm256_or_si256(acc.v[2], _mm256_sll_epi32(_mm256_cvtepu8_epi32(hi), s));
  acc.v[3] = _mm256_or_si256(acc.v[3], _mm256_sll_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), s));
}

inline void store_step(const DecodeTarget& t, uint64_t step, Acc& acc) {
  const __m128i drop = _mm_cvtsi32_si128(t.drop);
  for (int v = 0; v < 4; v++) acc.v[v] = _mm256_sll_epi32(acc.v[v], drop);
  if (t.elem_bytes == 2) {  // values < 2^16: pack, then undo packus's per-half interleave
    __m256i a = _mm256_permute4x64_epi64(_mm256_packus_epi32(acc.v[0], acc.v[1]), 0xD8);
    __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi32(acc.v[2], acc.v[3]), 0xD8);
    auto* o = reinterpret_cast<__m256i*>(t.dst + step * kLanes * 2);
    _mm256_storeu_si256(o, a);
    _mm256_storeu_si256(o + 1, b);
  } else {
    auto* o = reinterpret_cast<__m256i*>(t.dst + step * kLanes * 4);
    for (int v = 0; v < 4; v++) _mm256_storeu_si256(o + v, acc.v[v]);
  }
}

struct Isa {
  using Lanes = VecLanes;
  using Acc = avx2::Acc;
  static Acc zero() {
    return {{_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()}};
  }
  static void rans_step(Lanes& l, const FieldView& f, Acc& acc) { rans_vec_step(l, f, acc); }
  static __m256i load_bytes(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static __m256i planes_to_bytes(const uint8_t* p, int b0, int b1) { return avx2::planes_to_bytes(p, b0, b1); }
  static void widen_or(__m256i bytes, int shift, Acc& acc) { avx2::widen_or(bytes, shift, acc); }
  static void store(const DecodeTarget& t, uint64_t step, Acc& acc) { store_step(t, step, acc); }
  static void load_states(Lanes& l, const uint8_t* p) {
    for (int v = 0; v < 4; v++) l.st[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * v));
  }
  static void store_states(const Lanes& l, uint32_t* st) {
    for (int v = 0; v < 4; v++) _mm256_storeu_si256(reinterpret_cast<__m256i*>(st + 8 * v), l.st[v]);
  }
};

}  // namespace

bool available() { return true; }
void decode_one(const ChunkView& c, const DecodeTarget& t) { simd::decode_one<Isa>(c, t); }
void decode_pair(const ChunkView& a, const DecodeTarget& ta, const ChunkView& b, const DecodeTarget& tb) {
  simd::decode_pair<Isa>(a, ta, b, tb);
}

}  // namespace nz::avx2

#else

#include <stdexcept>

namespace nz::avx2 {
bool available() { return false; }
void decode_one(const ChunkView&, const DecodeTarget&) { throw std::logic_error("no AVX2 decoder"); }
void decode_pair(const ChunkView&, const DecodeTarget&, const ChunkView&, const DecodeTarget&) {
  throw std::logic_error("no AVX2 decoder");
}
}  // namespace nz::avx2

#endif
