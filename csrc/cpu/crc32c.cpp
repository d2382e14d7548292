#include "crc32c.h"

#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace nz {
namespace {

struct Tables {
  uint32_t t[8][256];
  Tables() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
      for (int s = 1; s < 8; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};

[[maybe_unused]] uint32_t crc_table(const uint8_t* p, size_t n, uint32_t crc) {
  static const Tables T;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    v ^= crc;
    crc = T.t[7][v & 0xFF] ^ T.t[6][(v >> 8) & 0xFF] ^ T.t[5][(v >> 16) & 0xFF] ^ T.t[4][(v >> 24) & 0xFF] ^
          T.t[3][(v >> 32) & 0xFF] ^ T.t[2][(v >> 40) & 0xFF] ^ T.t[1][(v >> 48) & 0xFF] ^ T.t[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ T.t[0][(crc ^ *p++) & 0xFF];
  return crc;
}

}  // namespace

#if defined(__SSE4_2__)
namespace {

// Three independent crc32q streams hide the instruction's 3-cycle latency (3x throughput). The streams are
// joined with the CRC's linearity: crc(A || B) = shift(crc(A), |B|) ^ crc_from_zero(B), where shift by a fixed
// kStripe bytes is a 32x32 GF(2) matrix, tabulated once as 4 x 256 entries.
constexpr size_t kStripe = 2048;

struct Shift {
  uint32_t t[4][256];
  Shift() {
    uint32_t col[32];
    for (int b = 0; b < 32; b++) {  // image of each basis bit after kStripe zero bytes
      uint64_t c = 1u << b;
      for (size_t i = 0; i < kStripe / 8; i++) c = _mm_crc32_u64(c, 0);
      col[b] = uint32_t(c);
    }
    for (int k = 0; k < 4; k++)
      for (int v = 0; v < 256; v++) {
        uint32_t r = 0;
        for (int b = 0; b < 8; b++)
          if (v >> b & 1) r ^= col[8 * k + b];
        t[k][v] = r;
      }
  }
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

}  // namespace
#endif

uint32_t crc32c(const uint8_t* p, size_t n, uint32_t crc) {
  crc = ~crc;
#if defined(__SSE4_2__)
  static const Shift shift;
  while (n >= 3 * kStripe) {
    uint64_t a = crc, b = 0, c = 0;
    for (size_t i = 0; i < kStripe; i += 8) {
      uint64_t va, vb, vc;
      std::memcpy(&va, p + i, 8);
      std::memcpy(&vb, p + kStripe + i, 8);
      std::memcpy(&vc, p + 2 * kStripe + i, 8);
      a = _mm_crc32_u64(a, va);
      b = _mm_crc32_u64(b, vb);
      c = _mm_crc32_u64(c, vc);
    }
    crc = shift(shift(uint32_t(a)) ^ uint32_t(b)) ^ uint32_t(c);
    p += 3 * kStripe;
    n -= 3 * kStripe;
  }
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  crc = uint32_t(c);
  while (n--) crc = _mm_crc32_u8(crc, *p++);
#else
  crc = crc_table(p, n, crc);
#endif
  return ~crc;
}

}  // namespace nz
