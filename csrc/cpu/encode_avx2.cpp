// AVX2 encoder kernels: rANS on 8 lanes per vector, the divide in doubles (exact, see EncTables::rcp), the
// renormalisation words of a vector compacted into lane order by one permutation (the reverse of the decoder's
// prefix permutation) and stored with one 16-byte write below the stream's front. Raw bit-planes are one
// movemask per plane. Must write the bytes of the scalar kernels (tests compare every encoder).
#include <algorithm>
#include <vector>

#include "bytes.h"
#include "encode_kernels.h"

#if defined(__AVX2__)
#include <immintrin.h>

namespace nz::enc_avx2 {
namespace {

// For an 8-lane emit mask m with k bits set: slot 8 - k + r takes the r-th emitting lane, so that the words
// end at the stream's front in lane order; the slots below are overwritten by later (earlier-lane) words.
struct CompactTable {
  alignas(32) int32_t idx[256][8];
  CompactTable() {
    for (int m = 0; m < 256; m++) {
      int k = __builtin_popcount(unsigned(m)), r = 0;
      for (int i = 0; i < 8; i++) idx[m][i] = 0;
      for (int i = 0; i < 8; i++)
        if (m >> i & 1) idx[m][8 - k + r++] = i;
    }
  }
};
const CompactTable kCompact;

inline __m256i load8(const uint16_t* p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load8(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// floor(x / freq) for 8 lanes: x as unsigned 32-bit, reciprocals of the lanes' symbols gathered as doubles.
inline __m256i div_lanes(__m256i x, __m256i sym, const double* rcp) {
  const __m128i flip = _mm_set1_epi32(int32_t(0x80000000u));
  const __m256d two31 = _mm256_set1_pd(2147483648.0);
  const __m128i xl = _mm256_castsi256_si128(x), xh = _mm256_extracti128_si256(x, 1);
  const __m256d dl = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(xl, flip)), two31);
  const __m256d dh = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(xh, flip)), two31);
  // masked gathers with a defined source (the plain intrinsic's undefined one trips -Wmaybe-uninitialized)
  const __m256d zero = _mm256_setzero_pd(), all = _mm256_castsi256_pd(_mm256_set1_epi32(-1));
  const __m256d rl = _mm256_mask_i32gather_pd(zero, rcp, _mm256_castsi256_si128(sym), all, 8);
  const __m256d rh = _mm256_mask_i32gather_pd(zero, rcp, _mm256_extracti128_si256(sym, 1), all, 8);
  const __m128i ql = _mm256_cvttpd_epi32(_mm256_mul_pd(dl, rl));
  const __m128i qh = _mm256_cvttpd_epi32(_mm256_mul_pd(dh, rh));
  return _mm256_set_m128i(qh, ql);
}

template <class T>
uint64_t rans(const FieldSrc<T>& f, const EncTables& t, uint32_t* states, uint16_t* end) {
  for (int l = 0; l < kLanes; l++) states[l] = kRansL;
  uint16_t* p = end;
  const uint64_t full = f.n / kLanes;
  // The partial last step goes first (back to front), one lane at a time, highest lane first.
  for (uint64_t i = f.n; i-- > full * kLanes;) rans_encode_step(states[i % kLanes], t.sym[f.at(i)], p);
  __m256i x[4];
  for (int v = 0; v < 4; v++) x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 8 * v));
  const __m128i shift = _mm_cvtsi32_si128(f.shift);
  const __m256i mask = _mm256_set1_epi32(int32_t(f.mask)), m12 = _mm256_set1_epi32(0xFFF);
  const __m256i one = _mm256_set1_epi32(1), sixteen = _mm256_set1_epi32(16), low16 = _mm256_set1_epi32(0xFFFF);
  const __m256i flip = _mm256_set1_epi32(int32_t(0x80000000u));
  for (uint64_t step = full; step-- > 0;) {
    const T* s = f.src + step * kLanes;
    for (int v = 3; v >= 0; v--) {  // lanes 31..0, as the format's encoder runs
      const __m256i sym = _mm256_and_si256(_mm256_srl_epi32(load8(s + 8 * v), shift), mask);
      const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(t.fc), sym, 4);
      const __m256i freq = _mm256_and_si256(e, m12), cum = _mm256_srli_epi32(e, 12);
      // emit when x >= freq << 21 (unsigned); freq << 21 - 1 wraps to 2^32 - 1 for freq = 2^11: never emits
      const __m256i x_max1 = _mm256_sub_epi32(_mm256_slli_epi32(freq, 32 - kProbBits), one);
      const __m256i emit = _mm256_cmpgt_epi32(_mm256_xor_si256(x[v], flip), _mm256_xor_si256(x_max1, flip));
      const int m = _mm256_movemask_ps(_mm256_castsi256_ps(emit));
      const __m256i w = _mm256_permutevar8x32_epi32(
          _mm256_and_si256(x[v], low16), _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompact.idx[m])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p - 8),
                       _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
      p -= __builtin_popcount(unsigned(m));
      const __m256i xs = _mm256_srlv_epi32(x[v], _mm256_and_si256(emit, sixteen));
      const __m256i q = div_lanes(xs, sym, t.rcp);
      x[v] = _mm256_add_epi32(
          _mm256_add_epi32(_mm256_slli_epi32(q, kProbBits), _mm256_sub_epi32(xs, _mm256_mullo_epi32(q, freq))), cum);
    }
  }
  for (int v = 0; v < 4; v++) _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 8 * v), x[v]);
  return uint64_t(end - p);
}

// 32 field values as 16-bit lanes: [0..15] in a, [16..31] in b.
inline void load32(const uint16_t* p, __m128i shift, __m256i mask, __m256i& a, __m256i& b) {
  a = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), shift), mask);
  b = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)), shift), mask);
}
inline void load32(const uint32_t* p, __m128i shift, __m256i mask, __m256i& a, __m256i& b) {
  __m256i v[4];
  for (int k = 0; k < 4; k++)
    v[k] = _mm256_srl_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8 * k)), shift);
  // packus saturates: mask in 32 bits first (field values have at most 10 bits)
  const __m256i m32 = _mm256_and_si256(mask, _mm256_set1_epi32(0xFFFF));
  for (int k = 0; k < 4; k++) v[k] = _mm256_and_si256(v[k], m32);
  a = _mm256_permute4x64_epi64(_mm256_packus_epi32(v[0], v[1]), 0xD8);
  b = _mm256_permute4x64_epi64(_mm256_packus_epi32(v[2], v[3]), 0xD8);
}

template <class T>
void raw(const FieldSrc<T>& f, uint64_t n_pad, int width, uint8_t* dst) {
  const __m128i shift = _mm_cvtsi32_si128(f.shift);
  const __m256i mask16 = _mm256_set1_epi16(int16_t(f.mask)), mask32 = _mm256_set1_epi32(int32_t(f.mask));
  const __m256i lo_mask = _mm256_set1_epi16(0xFF);
  if (width == 8) {  // byte per element
    uint64_t i = 0;
    for (; i + kLanes <= f.n; i += kLanes) {
      __m256i a, b;
      if constexpr (sizeof(T) == 2)
        load32(f.src + i, shift, mask16, a, b);
      else
        load32(f.src + i, shift, mask32, a, b);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                          _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8));
    }
    for (; i < f.n; i++) dst[i] = uint8_t(f.at(i));
    for (; i < n_pad; i++) dst[i] = 0;
    return;
  }
  for (uint64_t g = 0; g < n_pad / kLanes; g++) {
    __m256i a, b;
    if ((g + 1) * kLanes <= f.n) {
      if constexpr (sizeof(T) == 2)
        load32(f.src + g * kLanes, shift, mask16, a, b);
      else
        load32(f.src + g * kLanes, shift, mask32, a, b);
    } else {  // the last, partial group: pad elements are 0
      alignas(32) uint16_t tmp[kLanes];
      for (int l = 0; l < kLanes; l++) tmp[l] = g * kLanes + l < f.n ? uint16_t(f.at(g * kLanes + l)) : 0;
      a = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
      b = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp + 16));
    }
    // Bytes of the 32 values (low and high halves), then each plane is one movemask of the bit moved to the top.
    const __m256i lo =
        _mm256_permute4x64_epi64(_mm256_packus_epi16(_mm256_and_si256(a, lo_mask), _mm256_and_si256(b, lo_mask)), 0xD8);
    const __m256i hi =
        _mm256_permute4x64_epi64(_mm256_packus_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8)), 0xD8);
    for (int j = 0; j < width; j++) {
      const __m256i src = j < 8 ? lo : hi;
      // shifting 16-bit lanes left by 7 - (j % 8) puts bit j % 8 of each byte at that byte's top bit
      const uint32_t w = uint32_t(_mm256_movemask_epi8(_mm256_sll_epi16(src, _mm_cvtsi32_si128(7 - j % 8))));
      put_u32(dst, (g * width + j) * 4, w);
    }
  }
}

}  // namespace

bool available() { return true; }
const EncodeKernels kKernels = {rans<uint16_t>, rans<uint32_t>, raw<uint16_t>, raw<uint32_t>};

uint64_t division_mismatches() {
  // Every frequency, x at and around every multiple boundary of a spread of quotients, and the top of the range.
  uint64_t bad = 0;
  alignas(32) uint32_t xs[8], qs[8];
  alignas(32) int32_t syms[8];
  std::vector<double> rcp(kProbScale + 1);  // indexed by the frequency itself here
  for (uint32_t f = 1; f <= kProbScale; f++) rcp[f] = rcp_up(f);
  for (uint32_t f = 1; f <= kProbScale; f++) {
    const uint64_t limit = uint64_t(f) << (32 - kProbBits);  // states the divide sees are < freq << 21
    std::vector<uint64_t> cand;
    for (uint64_t q = 1; q < (uint64_t(1) << 21); q = q * 3 / 2 + 1)
      for (int64_t d : {int64_t(-1), int64_t(0), int64_t(1), int64_t(f) - 1}) cand.push_back(q * f + d);
    for (uint64_t d = 1; d <= 64; d++) cand.push_back(limit - d);
    for (size_t i = 0; i < cand.size(); i += 8) {
      for (int l = 0; l < 8; l++) {
        xs[l] = uint32_t(std::min(cand[std::min(i + l, cand.size() - 1)], limit - 1));
        syms[l] = int32_t(f);
      }
      const __m256i q = div_lanes(_mm256_load_si256(reinterpret_cast<const __m256i*>(xs)),
                                  _mm256_load_si256(reinterpret_cast<const __m256i*>(syms)), rcp.data());
      _mm256_store_si256(reinterpret_cast<__m256i*>(qs), q);
      for (int l = 0; l < 8; l++) bad += qs[l] != xs[l] / f;
    }
  }
  return bad;
}

}  // namespace nz::enc_avx2

#else

namespace nz::enc_avx2 {
bool available() { return false; }
const EncodeKernels kKernels = {nullptr, nullptr, nullptr, nullptr};
uint64_t division_mismatches() { return 0; }
}  // namespace nz::enc_avx2

#endif
