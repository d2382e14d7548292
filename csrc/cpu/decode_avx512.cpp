// AVX-512 chunk decoder (F + BW + VL): the AVX2 decoder's algorithm with 16 lanes per vector. Mask registers
// replace the AVX2 tricks: the lanes needing a renormalisation word are a compare mask, the words reach them by
// vpexpandd (the prefix permutation in one instruction), and a raw bit-plane is OR-ed into 32 bytes through
// its own bits as a byte mask. Must match decode_chunk_scalar bit for bit (tests run every decoder built).
#include <algorithm>

#include "chunk_view.h"
#include "codec.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>

namespace nz::avx512 {
namespace {

struct Lanes {
  __m512i st[2];
  uint64_t pos;
};

inline __m512i load_words(const FieldView& f, uint64_t pos) {
  if (__builtin_expect(pos + 16 <= f.n_words, 1))
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(f.data + 2 * pos)));
  alignas(64) uint32_t tmp[16];  // the stream's last words: never read past it (missing words read as 0,
  for (int i = 0; i < 16; i++) {  // caught by the final state check)
    uint16_t h = 0;
    if (pos + i < f.n_words) __builtin_memcpy(&h, f.data + 2 * (pos + i), 2);
    tmp[i] = h;
  }
  return _mm512_load_si512(tmp);
}

// One step (32 symbols) of one coded field: both vectors' symbol decodes first, then their word loads, so only
// the popcount chains the two.
inline void rans_step(Lanes& L, const FieldView& f, __m512i acc[2]) {
  const __m512i slot_mask = _mm512_set1_epi32(kProbScale - 1), m7ff = _mm512_set1_epi32(0x7FF);
  const __m512i one = _mm512_set1_epi32(1), m3ff = _mm512_set1_epi32(0x3FF), low = _mm512_set1_epi32(kRansL);
  const __m128i shift = _mm_cvtsi32_si128(f.shift);
  __m512i x[2];
  __mmask16 need[2];
  for (int v = 0; v < 2; v++) {
    __m512i e = _mm512_i32gather_epi32(_mm512_and_si512(L.st[v], slot_mask), f.table, 4);
    __m512i freq = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e, 10), m7ff), one);
    x[v] = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32(L.st[v], kProbBits)), _mm512_srli_epi32(e, 21));
    acc[v] = _mm512_or_si512(acc[v], _mm512_sll_epi32(_mm512_and_si512(e, m3ff), shift));
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

inline void widen_or(__m256i bytes, int shift, __m512i acc[2]) {
  const __m128i s = _mm_cvtsi32_si128(shift);
  acc[0] = _mm512_or_si512(acc[0], _mm512_sll_epi32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes)), s));
  acc[1] = _mm512_or_si512(acc[1], _mm512_sll_epi32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1)), s));
}

inline void store_step(const DecodeTarget& t, uint64_t step, __m512i acc[2]) {
  const __m128i drop = _mm_cvtsi32_si128(t.drop);
  for (int v = 0; v < 2; v++) acc[v] = _mm512_sll_epi32(acc[v], drop);
  if (t.elem_bytes == 2) {
    auto* o = reinterpret_cast<__m256i*>(t.dst + step * kLanes * 2);
    _mm256_storeu_si256(o, _mm512_cvtepi32_epi16(acc[0]));
    _mm256_storeu_si256(o + 1, _mm512_cvtepi32_epi16(acc[1]));
  } else {
    auto* o = reinterpret_cast<__m512i*>(t.dst + step * kLanes * 4);
    _mm512_storeu_si512(o, acc[0]);
    _mm512_storeu_si512(o + 1, acc[1]);
  }
}

template <int K>
void fused_steps(const ChunkView* const* c, const DecodeTarget* const* t, Lanes (*lanes)[kMaxFields], uint64_t s0,
                 uint64_t s1) {
  for (uint64_t step = s0; step < s1; step++) {
    for (int k = 0; k < K; k++) {
      __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
      for (int f = 0; f < c[k]->n_fields; f++) {
        const FieldView& fv = c[k]->field[f];
        if (fv.coded) {
          rans_step(lanes[k][f], fv, acc);
        } else if (fv.width == 8) {
          widen_or(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(fv.data + step * kLanes)), fv.shift, acc);
        } else {
          const uint8_t* planes = fv.data + step * fv.width * 4;
          widen_or(planes_to_bytes(planes, 0, fv.width < 8 ? fv.width : 8), fv.shift, acc);
          if (fv.width > 8) widen_or(planes_to_bytes(planes, 8, fv.width), fv.shift + 8, acc);
        }
      }
      store_step(*t[k], step, acc);
    }
  }
}

void init_lanes(const ChunkView& c, Lanes* lanes) {
  for (int f = 0; f < c.n_fields; f++) {
    if (!c.field[f].coded) continue;
    for (int v = 0; v < 2; v++) lanes[f].st[v] = _mm512_loadu_si512(c.field[f].states + 64 * v);
    lanes[f].pos = 0;
  }
}

void finish(const ChunkView& c, const DecodeTarget& t, Lanes* lanes) {
  RansLanes scalar[kMaxFields];
  for (int f = 0; f < c.n_fields; f++) {
    if (!c.field[f].coded) continue;
    for (int v = 0; v < 2; v++) _mm512_storeu_si512(scalar[f].st + 16 * v, lanes[f].st[v]);
    scalar[f].pos = lanes[f].pos;
  }
  finish_tail_scalar(c, t, scalar);
}

}  // namespace

bool available() { return true; }

void decode_one(const ChunkView& c, const DecodeTarget& t) {
  Lanes lanes[1][kMaxFields];
  init_lanes(c, lanes[0]);
  const ChunkView* cs[1] = {&c};
  const DecodeTarget* ts[1] = {&t};
  fused_steps<1>(cs, ts, lanes, 0, c.n / kLanes);
  finish(c, t, lanes[0]);
}

void decode_pair(const ChunkView& a, const DecodeTarget& ta, const ChunkView& b, const DecodeTarget& tb) {
  Lanes lanes[2][kMaxFields];
  init_lanes(a, lanes[0]);
  init_lanes(b, lanes[1]);
  const ChunkView* cs[2] = {&a, &b};
  const DecodeTarget* ts[2] = {&ta, &tb};
  const uint64_t fa = a.n / kLanes, fb = b.n / kLanes, both = std::min(fa, fb);
  fused_steps<2>(cs, ts, lanes, 0, both);
  fused_steps<1>(cs, ts, lanes, both, fa);
  fused_steps<1>(cs + 1, ts + 1, lanes + 1, both, fb);
  finish(a, ta, lanes[0]);
  finish(b, tb, lanes[1]);
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
