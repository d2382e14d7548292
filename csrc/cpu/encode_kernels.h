// What the chunk encoder's ISA kernels share: per-symbol encoder constants, the reference rANS step, and the
// kernels each ISA supplies (rANS over one field, raw field packing). encode.cpp picks the histograms, the
// coded/raw choice and the layout; a kernel only turns one field of a chunk's elements into bytes. Every kernel
// must write exactly the bytes of the scalar one (tests run them all).
#pragma once

#include <cstdint>

#include "../format.h"

namespace nz {

// Per-symbol encoder constants. x / freq is a multiply by a 33-bit reciprocal (Granlund-Montgomery: exact for
// every 32-bit x), several times faster than a hardware divide, which dominated encoding.
struct EncSymbol {
  uint64_t rcp;    // ceil(2^(32 + shift) / freq)
  uint32_t shift;  // ceil(log2 freq)
  uint32_t freq, cum;
  uint64_t x_max;  // renormalise when x >= freq << (32 - kProbBits)
};

struct EncTables {
  EncSymbol sym[1u << kMaxSymbolBits];  // the scalar kernel's
  uint32_t fc[1u << kMaxSymbolBits];    // the SIMD kernels': freq | cum << 12
  // The SIMD kernels divide in doubles: rcp = 1/freq rounded up by one ulp, so x * rcp >= x / freq, and the
  // excess (< 2^32 * 2^-51) is far below the 1/freq gap to the next integer: floor(x * rcp) = x / freq exactly
  // for every x < 2^32 (tests check it against the integer division).
  double rcp[1u << kMaxSymbolBits];
};

inline EncSymbol enc_symbol(uint32_t freq, uint32_t cum) {
  uint32_t shift = 0;
  while ((1u << shift) < freq) shift++;
  uint64_t rcp = ((uint64_t(1) << (32 + shift)) + freq - 1) / freq;
  return {rcp, shift, freq, cum, uint64_t(freq) << (32 - kProbBits)};
}

inline double rcp_up(uint32_t freq) {
  double r = 1.0 / double(freq);
  uint64_t b;
  __builtin_memcpy(&b, &r, 8);
  b += 1;  // the next double up (r is positive and finite)
  __builtin_memcpy(&r, &b, 8);
  return r;
}

// One rANS encode step of one lane (the format's definition): renormalise, then push the symbol. The emitted
// word goes to *--p: streams are written back to front, so that they end up in decode order. Branch-free:
// whether a lane emits is data-dependent and close to a coin flip.
inline void rans_encode_step(uint32_t& x_io, const EncSymbol& e, uint16_t*& p) {
  uint32_t x = x_io;
  const bool emit = x >= e.x_max;
  p[-1] = uint16_t(x & 0xFFFF);
  p -= emit;
  x >>= 16 * unsigned(emit);  // a shift, not a select: compilers turn the select into a mispredicted branch
  uint32_t q = uint32_t((static_cast<unsigned __int128>(x) * e.rcp) >> (32 + e.shift));
  x_io = (q << kProbBits) + (x - q * e.freq) + e.cum;
}

// The elements of one field of a chunk: field value of element i = (src[i] >> shift) & mask, for i < n; the
// raw layout pads to n_pad (a multiple of 32) with zeros. src is the caller's tensor (lossless) or the
// quantised values (lossy): 16- or 32-bit.
template <class T>
struct FieldSrc {
  const T* src;
  uint64_t n;
  int shift;
  uint32_t mask;
  uint32_t at(uint64_t i) const { return (uint32_t(src[i]) >> shift) & mask; }
};

// The kernels one ISA supplies. rans: encode the field's n symbols on 32 interleaved lanes (element j on lane
// j % 32), final states to states[32], words written back to front ending at `end` (the buffer must have
// n + 16 words before end); returns the number of words. raw: the raw layout of the field (FORMAT.md) to dst.
struct EncodeKernels {
  uint64_t (*rans16)(const FieldSrc<uint16_t>&, const EncTables&, uint32_t*, uint16_t*);
  uint64_t (*rans32)(const FieldSrc<uint32_t>&, const EncTables&, uint32_t*, uint16_t*);
  void (*raw16)(const FieldSrc<uint16_t>&, uint64_t n_pad, int width, uint8_t* dst);
  void (*raw32)(const FieldSrc<uint32_t>&, uint64_t n_pad, int width, uint8_t* dst);
};

namespace enc_scalar {
extern const EncodeKernels kKernels;
}
namespace enc_avx2 {
bool available();
extern const EncodeKernels kKernels;  // only valid where available()
uint64_t division_mismatches();       // self-check of the double divide (tests): 0
}  // namespace enc_avx2

}  // namespace nz
