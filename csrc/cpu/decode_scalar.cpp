// The reference chunk decoder: one field at a time into a u32 scratch, one lane at a time. Portable, and what
// the tests compare the SIMD decoder (and the GPU's per-lane logic) against.
#include <algorithm>
#include <cstring>

#include "chunk_view.h"
#include "codec.h"

namespace nz {

bool rans_lanes_ok(const RansLanes& r, const FieldView& f) {
  if (r.pos != f.n_words) return false;
  for (int l = 0; l < kLanes; l++)
    if (r.st[l] != kRansL) return false;
  return true;
}

void finish_tail_scalar(const ChunkView& c, const DecodeTarget& t, RansLanes* lanes) {
  const uint64_t full = c.n / kLanes;
  const int tail = int(c.n - full * kLanes);
  for (int l = 0; l < tail; l++) {
    uint64_t j = full * kLanes + l;
    uint32_t q = 0;
    for (int f = 0; f < c.n_fields; f++) {
      const FieldView& fv = c.field[f];
      q |= (fv.coded ? rans_lane_step(lanes[f], l, fv) : raw_field_value(fv, j)) << fv.shift;
    }
    q <<= t.drop;
    std::memcpy(t.dst + j * t.elem_bytes, &q, t.elem_bytes);
  }
  for (int f = 0; f < c.n_fields; f++)
    if (c.field[f].coded && !rans_lanes_ok(lanes[f], c.field[f]))
      throw FormatError("nzdist payload: entropy-coded stream is corrupted");
}

namespace {

void rans_field(const FieldView& f, uint64_t n, uint32_t* q) {
  RansLanes r;
  rans_lanes_init(r, f);
  for (uint64_t j = 0; j < n; j++) q[j] |= rans_lane_step(r, int(j % kLanes), f) << f.shift;
  if (!rans_lanes_ok(r, f)) throw FormatError("nzdist payload: entropy-coded stream is corrupted");
}

void raw_field(const FieldView& f, uint64_t n, uint64_t n_pad, uint32_t* q) {
  if (f.width == 8) {
    for (uint64_t i = 0; i < n; i++) q[i] |= uint32_t(f.data[i]) << f.shift;
    return;
  }
  for (uint64_t g = 0; g < n_pad / kLanes; g++) {
    uint32_t* out = q + g * kLanes;
    for (int b = 0; b < f.width; b++) {
      uint32_t w;
      std::memcpy(&w, f.data + (g * f.width + b) * 4, 4);
      for (int l = 0; l < kLanes; l++) out[l] |= ((w >> l) & 1u) << (f.shift + b);
    }
  }
}

}  // namespace

void decode_chunk_scalar(const ChunkView& c, const DecodeTarget& t, uint32_t* __restrict q) {
  std::fill(q, q + c.n_pad, 0u);
  for (int f = 0; f < c.n_fields; f++) {
    if (c.field[f].coded)
      rans_field(c.field[f], c.n, q);
    else
      raw_field(c.field[f], c.n, c.n_pad, q);
  }
  if (t.elem_bytes == 2) {
    auto* __restrict o = reinterpret_cast<uint16_t*>(t.dst);
    for (uint64_t i = 0; i < c.n; i++) o[i] = uint16_t(q[i] << t.drop);
  } else {
    auto* __restrict o = reinterpret_cast<uint32_t*>(t.dst);
    for (uint64_t i = 0; i < c.n; i++) o[i] = q[i] << t.drop;
  }
}

}  // namespace nz
