// The nzdist compressed-float format: layout constants and the per-element steps shared by the CPU and CUDA
// codecs. csrc/FORMAT.md says what every byte is; this header is the single source of the numbers there.
// Everything here is header-only and marked NZ_HD so the CPU tests run exactly the arithmetic the GPU runs.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NZ_HD __host__ __device__ __forceinline__
#else
#define NZ_HD inline
#endif

namespace nz {

// ---- container --------------------------------------------------------------------------------------------
constexpr uint32_t kMagic = 0x54445A4Eu;  // "NZDT" read as little-endian u32
constexpr uint16_t kVersion = 1;
constexpr uint32_t kHeaderFixedBytes = 64;
constexpr uint32_t kMaxNdim = 16;
constexpr uint32_t kAlign = 16;  // every section and chunk starts 16-byte aligned (128-bit vector loads)

// Header field offsets (all little-endian).
constexpr uint32_t kOffMagic = 0, kOffVersion = 4, kOffHeaderBytes = 6, kOffDtype = 8, kOffMode = 9, kOffKeepBits = 10,
                   kOffNdim = 11, kOffProbBits = 12, kOffFlags = 13, kOffNumel = 16, kOffChunkElems = 24,
                   kOffNumChunks = 28, kOffBlockSize = 32, kOffTotalBytes = 40, kOffMetaCrc = 48, kOffHeaderCrc = 52,
                   kOffShape = 64;

enum DType : uint8_t { kBF16 = 1, kFP16 = 2, kFP32 = 3 };
enum Mode : uint8_t { kModeRaw = 0, kModeCoded = 1 };
enum Flags : uint8_t { kFlagNormalized = 1, kFlagLossy = 2 };

// ---- entropy coder: interleaved rANS, one state per warp lane -------------------------------------------------
constexpr int kLanes = 32;     // element j of a chunk belongs to lane j % 32, step j / 32
constexpr int kProbBits = 11;  // probabilities sum to 2^11: an 8 KiB decode table per coded field
constexpr uint32_t kProbScale = 1u << kProbBits;
constexpr uint32_t kRansL = 1u << 16;  // state interval [2^16, 2^32), 16-bit renormalisation
constexpr int kMaxFields = 4;
constexpr int kMaxSymbolBits = 10;  // field 0 alphabet: sign | exponent | top mantissa bit(s)
constexpr uint32_t kChunkHeaderBytes = 16;
constexpr uint32_t kFieldHeaderBytes = 8 + 4 * kLanes;  // n_used u16, reserved u16, n_words u32, states
constexpr uint32_t kTableEntryBytes = 3;                // symbol (10 bits) | (freq - 1) << 10 (11 bits), little-endian

// Chunk header offsets.
constexpr uint32_t kChunkOffCrc = 0, kChunkOffElems = 4, kChunkOffCodedMask = 8;

NZ_HD uint64_t align_up(uint64_t x) { return (x + kAlign - 1) & ~uint64_t(kAlign - 1); }

// ---- dtypes ---------------------------------------------------------------------------------------------------
struct DTypeInfo {
  int bits;  // storage width
  int exp_bits;
  int mant_bits;
  int sym_mant_bits;  // mantissa bits that join sign and exponent in field 0 (they carry < 1 bit each)
};

NZ_HD DTypeInfo dtype_info(uint8_t dt) {
  switch (dt) {
    case kBF16:
      return {16, 8, 7, 1};
    case kFP16:
      return {16, 5, 10, 2};
    case kFP32:
      return {32, 8, 23, 1};
    default:
      return {0, 0, 0, 0};
  }
}

// Elements per chunk when the caller does not choose (the encoder takes any valid chunk_elems; decoders read
// it from the header). A chunk pays ~0.5 KiB of lane states and frequency table, so its size trades that
// overhead against per-chunk statistics and parallelism. fp16 gets 128 Ki: its field 0 (sign | exponent | 2
// mantissa bits) uses ~100 of 256 symbols with a flat spread, so its table costs twice bf16's per element;
// measured on Whisper-base fp16, 13.383 -> 13.361 bits/weight (ZipNN 0.5.4: 13.367), and no choice of
// field-0 mantissa bits (1..4) does better at 64 Ki. bf16 and fp32 keep 64 Ki (one GPU warp per chunk).
NZ_HD uint32_t default_chunk_elems(uint8_t dt) { return dt == kFP16 ? 1u << 17 : 1u << 16; }

// An element is coded as q = its top (1 + E + k) bits, k = kept mantissa bits (all of them when lossless).
// q is cut into fields from the top: field 0 is sign|exponent|min(k, sym_mant_bits) mantissa bits and is
// what entropy coding is for; the rest is the leftover bits that do not fill a byte, then whole bytes (byte
// fields are stored as plain byte arrays when raw). Each field of each chunk is entropy-coded or raw, as the
// encoder finds smaller.
struct FieldLayout {
  int n;
  int width[kMaxFields];
  int shift[kMaxFields];
};

NZ_HD FieldLayout field_layout(uint8_t dt, int keep_bits) {
  DTypeInfo d = dtype_info(dt);
  FieldLayout f{};
  int total = 1 + d.exp_bits + keep_bits;
  int w0 = 1 + d.exp_bits + (keep_bits < d.sym_mant_bits ? keep_bits : d.sym_mant_bits);
  int rem = total - w0;
  f.width[0] = w0;
  f.shift[0] = rem;
  f.n = 1;
  int odd = rem % 8;
  if (odd) {
    f.width[f.n] = odd;
    f.shift[f.n] = rem - odd;
    f.n++;
    rem -= odd;
  }
  while (rem > 0) {
    f.width[f.n] = 8;
    f.shift[f.n] = rem - 8;
    f.n++;
    rem -= 8;
  }
  return f;
}

// Bytes a raw field of `width` bits takes for n_pad (multiple of 32) elements: byte fields as bytes,
// others as bit-planes (per group of 32 elements, `width` u32 words; word j holds bit j of the group's lanes).
NZ_HD uint64_t raw_field_bytes(int width, uint64_t n_pad) { return n_pad * uint64_t(width) / 8; }

// ---- rANS steps ----------------------------------------------------------------------------------------------
// Decode table entry: symbol | (freq - 1) << 10 | (slot - cum) << 21.
NZ_HD uint32_t pack_decode_entry(uint32_t sym, uint32_t freq, uint32_t bias) {
  return sym | ((freq - 1) << 10) | (bias << 21);
}

// One decode step: returns the symbol, advances the state; the caller renormalises with the next 16-bit word
// when the state drops below kRansL.
NZ_HD uint32_t rans_decode_step(uint32_t& x, const uint32_t* table) {
  uint32_t e = table[x & (kProbScale - 1)];
  uint32_t freq = ((e >> 10) & 0x7FFu) + 1;
  x = freq * (x >> kProbBits) + (e >> 21);
  return e & 0x3FFu;
}

// ---- lossy quantisation -------------------------------------------------------------------------------------
NZ_HD uint32_t exp_all_ones(const DTypeInfo& d) { return ((1u << d.exp_bits) - 1) << d.mant_bits; }
NZ_HD uint32_t sign_bit(const DTypeInfo& d) { return 1u << (d.bits - 1); }

// Round a bit pattern to `keep` mantissa bits, to nearest with ties to even, carrying into the exponent.
// NaN becomes the canonical quiet NaN (so the carry cannot change its class); a finite value that would round
// up to infinity saturates to the largest finite value with `keep` mantissa bits.
NZ_HD uint32_t round_mantissa(uint32_t u, const DTypeInfo& d, int keep) {
  int drop = d.mant_bits - keep;
  if (drop == 0) return u;
  uint32_t sign = u & sign_bit(d);
  uint32_t mag = u & (sign_bit(d) - 1);
  uint32_t inf = exp_all_ones(d);
  if (mag > inf) return sign | inf | (1u << (d.mant_bits - 1));  // NaN (keep >= 1 is enforced for NaN input)
  if (mag == inf) return u;
  mag += ((1u << (drop - 1)) - 1) + ((mag >> drop) & 1u);
  mag &= ~((1u << drop) - 1);
  if (mag >= inf) mag = inf - (1u << drop);
  return sign | mag;
}

// float <-> dtype bits, round to nearest even, identical on host and device (no reliance on FTZ or intrinsics).
NZ_HD uint32_t f32_bits(float f) {
  union {
    float f;
    uint32_t u;
  } v{f};
  return v.u;
}
NZ_HD float bits_f32(uint32_t u) {
  union {
    uint32_t u;
    float f;
  } v{u};
  return v.f;
}

NZ_HD float dtype_to_float(uint32_t u, uint8_t dt) {
  if (dt == kFP32) return bits_f32(u);
  if (dt == kBF16) return bits_f32(u << 16);
  // fp16 -> fp32, exact
  uint32_t sign = (u & 0x8000u) << 16, exp = (u >> 10) & 0x1F, man = u & 0x3FF;
  if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    float f = float(man) * (1.0f / 16777216.0f);  // man * 2^-24, exact
    return sign ? -f : f;
  }
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

NZ_HD uint32_t float_to_dtype(float f, uint8_t dt) {
  uint32_t x = f32_bits(f);
  if (dt == kFP32) return x;
  if (dt == kBF16) {
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (x >> 16) | 0x40u;  // NaN stays NaN
    return (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  }
  // fp32 -> fp16, round to nearest even
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mag = x & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) return sign | 0x7E00u;
  if (mag >= 0x477FF000u) return sign | 0x7C00u;  // rounds to >= 65520: infinity
  if (mag < 0x38800000u) {                        // fp16 subnormal or zero
    if (mag < 0x33000000u) return sign;           // < 2^-25 rounds to zero (2^-25 itself ties to zero)
    uint32_t e = mag >> 23, m = (mag & 0x7FFFFFu) | 0x800000u;
    int shift = 126 - int(e);  // 14 + (113 - e - 1) ... places the value in units of 2^-24
    uint32_t q = m >> shift, rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (q & 1u))) q++;
    return sign | q;
  }
  uint32_t r = mag + 0xFFFu + ((mag >> 13) & 1u);
  return sign | ((r - 0x38000000u) >> 13);
}

}  // namespace nz
