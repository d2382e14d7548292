// The driver both SIMD chunk decoders share. An Isa supplies the vector types and the per-step kernels:
//   Acc (32 decoded q values), Lanes (one coded field's 32 rANS states + its word position),
//   zero(), rans_step(Lanes&, field, Acc&), load_bytes(p), planes_to_bytes(p, b0, b1) -> 32 bytes,
//   widen_or(bytes, shift, Acc&), store(target, step, Acc&), load_states(Lanes&, p), store_states(Lanes, u32*).
// Per step of 32 elements every field is decoded and merged in registers and the results are stored once;
// decode_pair runs two chunks' steps alternately so their independent rANS chains overlap in the core.
#pragma once

#include <algorithm>

#include "chunk_view.h"

namespace nz::simd {

// Prefetches a chunk's `ahead` bytes spread evenly over its steps (a burst of prefetches would only queue up
// behind the core's few outstanding-miss slots).
struct Ahead {
  const uint8_t* p;
  const uint8_t* end;
  uint64_t per_step;
  Ahead(const ChunkView& c) : p(c.ahead), end(c.ahead + c.ahead_bytes) {
    const uint64_t steps = c.n / kLanes + 1, lines = (c.ahead_bytes + 63) / 64;
    per_step = 64 * ((lines + steps - 1) / steps);
  }
  void step() {
    for (uint64_t b = 0; b < per_step && p < end; b += 64, p += 64) __builtin_prefetch(p, 0, 3);
  }
};

template <class Isa, int K>
void fused_steps(const ChunkView* const* c, const DecodeTarget* const* t, typename Isa::Lanes (*lanes)[kMaxFields],
                 uint64_t s0, uint64_t s1, Ahead& ahead) {
  for (uint64_t step = s0; step < s1; step++) {
    ahead.step();
    for (int k = 0; k < K; k++) {
      typename Isa::Acc acc = Isa::zero();
      for (int f = 0; f < c[k]->n_fields; f++) {
        const FieldView& fv = c[k]->field[f];
        if (fv.coded) {
          Isa::rans_step(lanes[k][f], fv, acc);
        } else if (fv.width == 8) {
          Isa::widen_or(Isa::load_bytes(fv.data + step * kLanes), fv.shift, acc);
        } else {
          const uint8_t* planes = fv.data + step * fv.width * 4;
          Isa::widen_or(Isa::planes_to_bytes(planes, 0, std::min(fv.width, 8)), fv.shift, acc);
          if (fv.width > 8) Isa::widen_or(Isa::planes_to_bytes(planes, 8, fv.width), fv.shift + 8, acc);
        }
      }
      Isa::store(*t[k], step, acc);
    }
  }
}

template <class Isa>
void init_lanes(const ChunkView& c, typename Isa::Lanes* lanes) {
  for (int f = 0; f < c.n_fields; f++) {
    if (!c.field[f].coded) continue;
    Isa::load_states(lanes[f], c.field[f].states);
    lanes[f].pos = 0;
  }
}

// The last, partial step continues each coded field's lanes one at a time; then the integrity check.
template <class Isa>
void finish(const ChunkView& c, const DecodeTarget& t, const typename Isa::Lanes* lanes) {
  RansLanes scalar[kMaxFields];
  for (int f = 0; f < c.n_fields; f++) {
    if (!c.field[f].coded) continue;
    Isa::store_states(lanes[f], scalar[f].st);
    scalar[f].pos = lanes[f].pos;
  }
  finish_tail_scalar(c, t, scalar);
}

template <class Isa>
void decode_one(const ChunkView& c, const DecodeTarget& t) {
  typename Isa::Lanes lanes[1][kMaxFields];
  init_lanes<Isa>(c, lanes[0]);
  const ChunkView* cs[1] = {&c};
  const DecodeTarget* ts[1] = {&t};
  Ahead ahead(c);
  fused_steps<Isa, 1>(cs, ts, lanes, 0, c.n / kLanes, ahead);
  finish<Isa>(c, t, lanes[0]);
}

template <class Isa>
void decode_pair(const ChunkView& a, const DecodeTarget& ta, const ChunkView& b, const DecodeTarget& tb) {
  typename Isa::Lanes lanes[2][kMaxFields];
  init_lanes<Isa>(a, lanes[0]);
  init_lanes<Isa>(b, lanes[1]);
  const ChunkView* cs[2] = {&a, &b};
  const DecodeTarget* ts[2] = {&ta, &tb};
  const uint64_t fa = a.n / kLanes, fb = b.n / kLanes, both = std::min(fa, fb);
  Ahead ahead(a);  // the pair's successor is recorded on its first chunk
  fused_steps<Isa, 2>(cs, ts, lanes, 0, both, ahead);
  fused_steps<Isa, 1>(cs, ts, lanes, both, fa, ahead);
  fused_steps<Isa, 1>(cs + 1, ts + 1, lanes + 1, both, fb, ahead);
  finish<Isa>(a, ta, lanes[0]);
  finish<Isa>(b, tb, lanes[1]);
}

}  // namespace nz::simd
