// A validated chunk, ready to decode: where each field's data is and how to read it. decode.cpp builds it
// (after every bounds and checksum check); the scalar and SIMD decoders consume it.
#pragma once

#include <cstdint>

#include "../format.h"

namespace nz {

struct FieldView {
  bool coded;
  int width, shift;
  const uint32_t* table;  // coded: 2^11 decode entries (pack_decode_entry)
  const uint8_t* states;  // coded: 32 u32 initial lane states
  const uint8_t* data;    // coded: u16 word stream; raw: bytes or bit-planes
  uint64_t n_words;       // coded
};

struct ChunkView {
  uint64_t n, n_pad;
  int n_fields;
  FieldView field[kMaxFields];
  // Bytes this thread reads next (the chunks it opens after this one), pulled into cache a few lines per step
  // while this chunk decodes: their checksum pass then reads from cache instead of waiting on DRAM.
  const uint8_t* ahead = nullptr;
  uint64_t ahead_bytes = 0;
};

// Where decoded elements go: bit patterns q << drop (drop = mantissa bits not kept) as 2- or 4-byte elements.
// Block-normalised payloads decode to 4-byte scratch first and are de-normalised in a post-pass.
struct DecodeTarget {
  uint8_t* dst;
  int elem_bytes;  // 2 or 4
  int drop;
};

// Throws FormatError if a word stream does not end exactly with every lane back at its initial state.
void decode_chunk_scalar(const ChunkView& c, const DecodeTarget& t, uint32_t* q_scratch);
// SIMD decoders, where this build has them (same results as decode_chunk_scalar). decode_pair decodes two
// independent chunks at once so that their rANS dependency chains interleave in the core.
struct RansLanes;
namespace avx2 {
bool available();
void decode_one(const ChunkView& c, const DecodeTarget& t);
void decode_pair(const ChunkView& a, const DecodeTarget& ta, const ChunkView& b, const DecodeTarget& tb);
}  // namespace avx2
namespace avx512 {
bool available();
void decode_one(const ChunkView& c, const DecodeTarget& t);
void decode_pair(const ChunkView& a, const DecodeTarget& ta, const ChunkView& b, const DecodeTarget& tb);
}  // namespace avx512

// The SIMD decoders' last, partial step, one lane at a time (continuing each coded field's lanes), and the
// integrity check of every coded field.
void finish_tail_scalar(const ChunkView& c, const DecodeTarget& t, RansLanes* lanes);

}  // namespace nz

namespace nz {

// rANS lanes of one coded field, decoded one symbol at a time (the reference, and the SIMD decoder's tail).
struct RansLanes {
  uint32_t st[kLanes];
  uint64_t pos = 0;
};

inline void rans_lanes_init(RansLanes& r, const FieldView& f) {
  for (int l = 0; l < kLanes; l++) {
    uint32_t v;
    __builtin_memcpy(&v, f.states + 4 * l, 4);
    r.st[l] = v;
  }
  r.pos = 0;
}

// Decode lane l's next symbol; words past the stream's end read as 0 and are caught by rans_lanes_check.
inline uint32_t rans_lane_step(RansLanes& r, int l, const FieldView& f) {
  uint32_t x = r.st[l];
  uint32_t sym = rans_decode_step(x, f.table);
  if (x < kRansL) {
    uint16_t w = 0;
    if (r.pos < f.n_words) __builtin_memcpy(&w, f.data + 2 * r.pos, 2);
    x = (x << 16) | w;
    r.pos++;
  }
  r.st[l] = x;
  return sym;
}

// Every lane must be back at the encoder's initial state, with every word consumed.
bool rans_lanes_ok(const RansLanes& r, const FieldView& f);

// Bits of raw field f for element j of the chunk.
inline uint32_t raw_field_value(const FieldView& f, uint64_t j) {
  if (f.width == 8) return f.data[j];
  uint64_t g = j / kLanes;
  int l = int(j % kLanes);
  uint32_t v = 0;
  for (int b = 0; b < f.width; b++) {
    uint32_t w;
    __builtin_memcpy(&w, f.data + (g * f.width + b) * 4, 4);
    v |= ((w >> l) & 1u) << b;
  }
  return v;
}

}  // namespace nz
