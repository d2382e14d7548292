// The GPU codec's per-chunk logic, written once against the warp interface of simt.h: decode_item (one work
// item of a batched decode: header checks, chunk index checks, fused entropy decode + merge + store) and
// encode_chunk (histogram, normalise, rANS back to front, layout, CRC32C), plus the CRC32C algebra and the
// header/layout helpers the encode pipeline's other kernels use. decode.cu / encode.cu launch it with
// DeviceWarp; tests/cuda build host_sim.cpp, which runs it with HostWarp against the CPU codec's payloads.
//
// Byte-level results must equal the CPU codec (csrc/cpu/encode.cpp, decode.cpp); where the CPU's code is the
// definition (normalise(), lane order of renormalisation words) the comments say so. Header checks, chunk sizes and
// the raw-vs-coded rule are not copies: both codecs call csrc/validate.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "../format.h"
#include "../validate.h"
#include "records.h"
#include "simt.h"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

#if defined(__CUDA_ARCH__)  // device pass only: the host compiler would warn about an unknown pragma
#define NZ_UNROLL _Pragma("unroll")
#else
#define NZ_UNROLL
#endif

namespace nz {
namespace gpu {

// ---- little-endian stores (the loads are validate.h's), aligned on the device like the loads.
template <class T>
NZ_HD void store_le(uint8_t* p, T v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<T*>(p) = v;
#else
  std::memcpy(p, &v, sizeof(T));
#endif
}
NZ_HD void st16(uint8_t* p, uint32_t v) { store_le(p, uint16_t(v)); }
NZ_HD void st32(uint8_t* p, uint32_t v) { store_le(p, v); }
NZ_HD void st64(uint8_t* p, uint64_t v) { store_le(p, v); }

// dadd, dsub, dmul (validate.h): doubles without FMA contraction, so host and device round alike.
NZ_HD double dlog2(double x) {
#if defined(__CUDA_ARCH__)
  return ::log2(x);
#else
  return std::log2(x);
#endif
}

// ---- CRC32C (Castagnoli, reflected 0x82F63B78), the definition of csrc/cpu/crc32c.cpp.
// crc_update is the raw register step (no pre/post inversion); crc32c(data) = ~crc_update(~0, data).
// The raw step is linear over GF(2): crc_update(c, A||B) = shift(crc_update(c, A), |B|) ^ crc_update(0, B),
// shift(c, n) = c * x^(8n) mod P. So any set of lanes/threads can each checksum a piece with crc_update(0, .)
// and XOR together shift(piece_crc, bytes after the piece): one warp per chunk, or a whole grid per tensor.
constexpr uint32_t kCrcPoly = 0x82F63B78u;

NZ_HD uint32_t crc_table_entry(uint32_t i) {
  uint32_t c = i;
  for (int k = 0; k < 8; k++) c = (c >> 1) ^ (kCrcPoly & (0u - (c & 1u)));
  return c;
}

NZ_HD uint32_t crc_update(uint32_t c, const uint8_t* p, uint64_t n, const uint32_t* table) {
  for (uint64_t i = 0; i < n; i++) c = (c >> 8) ^ table[(c ^ p[i]) & 0xFFu];
  return c;
}

// a * b mod P in the reflected representation (x^0 is bit 31).
NZ_HD uint32_t gf2_mulmod(uint32_t a, uint32_t b) {
  uint32_t p = 0;
  for (uint32_t m = 1u << 31; m; m >>= 1) {
    if (a & m) p ^= b;
    b = (b & 1u) ? (b >> 1) ^ kCrcPoly : b >> 1;
  }
  return p;
}

// c * x^(8n) mod P: the raw CRC register after n more zero bytes.
NZ_HD uint32_t crc_shift(uint32_t c, uint64_t n) {
  uint32_t base = 1u << 23;  // x^8
  uint32_t r = 1u << 31;     // x^0
  while (n) {
    if (n & 1u) r = gf2_mulmod(base, r);
    base = gf2_mulmod(base, base);
    n >>= 1;
  }
  return gf2_mulmod(r, c);
}

// crc32c of an n-byte message whose pieces' shifted raw CRCs XOR to `acc`.
NZ_HD uint32_t crc_finish(uint32_t acc, uint64_t n) { return ~(acc ^ crc_shift(0xFFFFFFFFu, n)); }

// Warp-parallel contribution of bytes [p, p + len) that are followed by `after` more message bytes.
template <class W>
NZ_HD uint32_t crc_piece(const uint8_t* p, uint64_t len, uint64_t after, const uint32_t* table) {
  typename W::template Reg<uint32_t> c;
  const uint64_t seg = (len + kLanes - 1) / kLanes;
  W::each([&](int l) {
    uint64_t a = seg * uint64_t(l), b = a + seg < len ? a + seg : len;
    c[l] = a < b ? crc_shift(crc_update(0, p + a, b - a, table), after + (len - b)) : 0u;
  });
  return W::xor_all(c);
}

// ---- header ---------------------------------------------------------------------------------------------------
// validate.h's header checks, except the header CRC (see header_crc). Returns 0 or kErrHeader.
NZ_HD uint32_t parse_head(const uint8_t* s, uint64_t len, HeaderFields& h) {
  if (check_header_extent(s, len, h) != kHeaderOk || check_header_fields(s, len, h, nullptr) != kHeaderOk)
    return kErrHeader;
  return 0;
}

// Header CRC: over the header bytes with the CRC field read as zero (single lane; at most 192 bytes).
NZ_HD uint32_t header_crc(const uint8_t* s, uint32_t header_bytes, const uint32_t* table) {
  const uint8_t zeros[4] = {0, 0, 0, 0};
  uint32_t c = crc_update(0xFFFFFFFFu, s, kOffHeaderCrc, table);
  c = crc_update(c, zeros, 4, table);
  c = crc_update(c, s + kOffHeaderCrc + 4, header_bytes - kOffHeaderCrc - 4, table);
  return ~c;
}

// ---- batched decode ---------------------------------------------------------------------------------------------
// DecodeJob (records.h): one payload of a batch, as the host describes it.
NZ_HD uint64_t job_items(uint64_t numel, uint32_t grain) { return numel == 0 ? 1 : (numel + grain - 1) / grain; }

// Decode tables: one 2048-entry table per coded field, built by the warp from the chunk's frequency list with
// every check of the CPU's build_table. Returns 0 or kErrTable (warp-uniform).
template <class W>
NZ_HD uint32_t build_table(const uint8_t* entries, uint32_t n_used, int width, uint32_t* table) {
  typename W::template Reg<uint32_t> sym, freq, cum, bad;
  uint32_t cum_base = 0, prev_last = 0xFFFFFFFFu;  // uniform
  W::sync();  // the previous chunk's decode is done with this table memory in every lane
  for (uint32_t g = 0; g < n_used; g += kLanes) {
    W::each([&](int l) {
      uint32_t i = g + uint32_t(l);
      uint32_t e = 0;
      if (i < n_used) {
        const uint8_t* p = entries + 3 * i;
        e = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16;
      }
      sym[l] = e & 0x3FFu;
      freq[l] = i < n_used ? ((e >> 10) & 0x7FFu) + 1 : 0u;
      bad[l] = i < n_used && ((e >> 21) || sym[l] >= (1u << width));
    });
    typename W::template Reg<uint32_t> prev = W::shfl_up1(sym, prev_last);
    typename W::template Reg<uint32_t> excl = W::scan_excl(freq);
    W::each([&](int l) {
      uint32_t i = g + uint32_t(l);
      cum[l] = cum_base + excl[l];
      if (i < n_used && ((g + uint32_t(l) > 0 && sym[l] <= prev[l]) || cum[l] + freq[l] > kProbScale)) bad[l] = 1;
    });
    if (W::ballot([&](int l) { return bad[l] != 0; })) return kErrTable;
    W::each([&](int l) {
      for (uint32_t k = 0; k < freq[l]; k++) table[cum[l] + k] = pack_decode_entry(sym[l], freq[l], k);
    });
    cum_base += W::sum(freq);
    prev_last = W::bcast(sym, kLanes - 1);
  }
  W::sync();
  return cum_base == kProbScale ? 0u : kErrTable;
}

// field_layout() (format.h) in closed form, so a kernel can keep the widths/shifts of an unrolled field loop in
// registers (field_layout's dynamic indexing puts its arrays in local memory). Checked against field_layout by
// the host tests (every dtype and kept-bit count decodes through it).
struct FieldRegs {
  int n;
  int w0, rem, odd;
};
NZ_HD FieldRegs field_regs(uint8_t dt, int keep) {
  const DTypeInfo d = dtype_info(dt);
  FieldRegs r;
  r.w0 = 1 + d.exp_bits + (keep < d.sym_mant_bits ? keep : d.sym_mant_bits);
  r.rem = 1 + d.exp_bits + keep - r.w0;
  r.odd = r.rem % 8;
  r.n = 1 + (r.odd ? 1 : 0) + (r.rem - r.odd) / 8;
  return r;
}
NZ_HD int field_width(const FieldRegs& r, int f) { return f == 0 ? r.w0 : (r.odd && f == 1) ? r.odd : 8; }
NZ_HD int field_shift(const FieldRegs& r, int f) {
  if (f == 0) return r.rem;
  if (r.odd) return f == 1 ? r.rem - r.odd : r.rem - r.odd - 8 * (f - 1);
  return r.rem - 8 * f;
}

struct ChunkView {
  const uint8_t* ch;     // chunk start
  uint64_t size;         // chunk bytes (from the index)
  uint64_t begin;        // first element
  uint32_t n;            // elements
  const uint8_t* norms;  // block normalisers or null
};

struct PayloadCtx {
  uint8_t* dst;
  uint8_t dtype;
  int keep;
  uint32_t block_size;
  bool normalized;
};

// Decode kernel variants (csrc/cuda/NOTES.md, "Decode variants"). All run the same checks and produce the same
// bits; they differ in how raw fields reach the step and where the decode tables live.
enum Variant : int {
  kV1 = 1,  // as first written: raw-field words loaded in the step that uses them
  kV2 = 2,  // raw fields prefetched a group of steps ahead, double-buffered in registers, shuffled to the lanes
  kV3 = 3,  // one decode table per warp, further tables taken from a per-block pool only by chunks that code more
};

// Where a warp's decode tables are. FixedTables (v1, v2): NT tables per warp, table t at base + t * 2048.
struct FixedTables {
  uint32_t* base;
  NZ_HD uint32_t* get(int t) const { return base + size_t(t) * kProbScale; }
  template <class W>
  NZ_HD void acquire(int) {}
  template <class W>
  NZ_HD void release() {}
};

// PooledTables (v3): the warp's own table for its first coded field; a chunk coding k > 1 fields takes k - 1
// tables from the block's pool (all at once) for the chunk's duration. Shared memory follows the coded-field
// count of the chunks actually decoded, not the widest dtype's field count.
struct PooledTables {
  uint32_t* own;
  uint32_t* pool;       // pool_slots tables
  uint32_t* pool_word;  // bit i set: pool table i is taken
  int pool_slots;
  uint32_t got;  // uniform: the pool tables this warp holds
  NZ_HD uint32_t* get(int t) const {
    if (t == 0) return own;
    uint32_t m = got;
    for (int k = 1; k < t; k++) m &= m - 1;
    return pool + size_t(lowest_bit(m)) * kProbScale;
  }
  template <class W>
  NZ_HD void acquire(int coded) {
    got = coded > 1 ? W::acquire_slots(pool_word, pool_slots, coded - 1) : 0u;
  }
  template <class W>
  NZ_HD void release() {
    if (got) W::release_slots(pool_word, got);
    got = 0;
  }
};

template <class W, int NT, int V, class Tables>
NZ_HD uint32_t decode_fields(const PayloadCtx& px, const ChunkView& cv, uint32_t mask, Tables& tabs);

// Entropy decode of every field of one chunk, merged and stored as final values: no intermediate buffer.
// NT = decode tables a chunk may need (>= the dtype's field count). Returns 0 or Err bits (warp-uniform).
template <class W, int NT, int V, class Tables>
NZ_HD uint32_t decode_chunk(const PayloadCtx& px, const ChunkView& cv, Tables& tabs) {
  const FieldRegs fr = field_regs(px.dtype, px.keep);
  const uint8_t* ch = cv.ch;
  if (ld32(ch + kChunkOffElems) != cv.n) return kErrChunk;
  const uint32_t mask = ch[kChunkOffCodedMask];
  if ((mask >> fr.n) || fr.n > NT) return kErrChunk;
  tabs.template acquire<W>(popc(mask));
  const uint32_t e = decode_fields<W, NT, V>(px, cv, mask, tabs);
  tabs.template release<W>();
  return e;
}

template <class W, int NT, int V, class Tables>
NZ_HD uint32_t decode_fields(const PayloadCtx& px, const ChunkView& cv, uint32_t mask, Tables& tabs) {
  const DTypeInfo d = dtype_info(px.dtype);
  const FieldRegs fr = field_regs(px.dtype, px.keep);
  struct {
    int n;
    int width[NT], shift[NT];
  } fl;
  fl.n = fr.n;
  NZ_UNROLL
  for (int f = 0; f < NT; f++) {
    fl.width[f] = field_width(fr, f);
    fl.shift[f] = field_shift(fr, f);
  }
  const uint8_t* ch = cv.ch;
  const uint64_t size = cv.size;
  const uint32_t n = cv.n, n_pad = (n + kLanes - 1) / kLanes * kLanes;

  // Walk the layout exactly as the CPU does: coded headers+tables, raw fields, word streams.
  const uint8_t* fhead[NT] = {};
  const uint8_t* fdata[NT] = {};
  uint32_t nwords[NT] = {};
  int tix[NT] = {};
  uint64_t off = kChunkHeaderBytes;
  int t = 0;
  NZ_UNROLL
  for (int f = 0; f < NT; f++) {
    if (f >= fl.n || !(mask >> f & 1)) continue;
    if (off + kFieldHeaderBytes > size) return kErrChunk;
    const uint32_t n_used = ld16(ch + off);
    nwords[f] = ld32(ch + off + 4);
    if (n_used == 0 || n_used > (1u << fl.width[f])) return kErrTable;
    const uint64_t table_end = off + kFieldHeaderBytes + uint64_t(kTableEntryBytes) * n_used;
    if (table_end > size) return kErrChunk;
    if (uint32_t e = build_table<W>(ch + off + kFieldHeaderBytes, n_used, fl.width[f], tabs.get(t))) return e;
    fhead[f] = ch + off;
    tix[f] = t++;
    off = align_up(table_end);
  }
  NZ_UNROLL
  for (int f = 0; f < NT; f++) {
    if (f >= fl.n || (mask >> f & 1)) continue;
    fdata[f] = ch + off;
    off += align_up(raw_field_bytes(fl.width[f], n_pad));
    if (off > size) return kErrChunk;
  }
  NZ_UNROLL
  for (int f = 0; f < NT; f++) {
    if (f >= fl.n || !(mask >> f & 1)) continue;
    if (nwords[f] > size / 2) return kErrChunk;
    fdata[f] = ch + off;
    off += align_up(2 * uint64_t(nwords[f]));
    if (off > size) return kErrChunk;
  }
  if (off != size) return kErrChunk;

  // Per coded field: lane states, and a 64-word window of the stream held one word per lane in two registers.
  // Lane l needing a word takes word pos + rank(l among needing lanes): lane-order renormalisation, the CPU's
  // scalar loop order. The window's second half is loaded ~3 steps before it is needed.
  typename W::template Reg<uint32_t> x[NT], b0[NT], b1[NT];
  uint32_t pos[NT] = {}, base[NT] = {};
  NZ_UNROLL
  for (int f = 0; f < NT; f++) {
    if (f >= fl.n || !(mask >> f & 1)) continue;
    const uint8_t* words = fdata[f];
    const uint32_t nw = nwords[f];
    W::each([&](int l) {
      x[f][l] = ld32(fhead[f] + 8 + 4 * l);
      b0[f][l] = uint32_t(l) < nw ? ld16(words + 2 * l) : 0u;
      b1[f][l] = uint32_t(l) + 32 < nw ? ld16(words + 2 * (l + 32)) : 0u;
    });
  }

  const uint32_t steps = n_pad / kLanes;
  // v2: raw fields staged ahead of the steps that use them, two buffers deep. A byte field: 4 steps (128 bytes)
  // per u32 per lane, one coalesced load per 4 steps, one shuffle per step. The bit-plane field (field 1 when
  // the dtype has one, at most kStagedPlanes planes): 32 steps of planes, lane l holding step l's planes, one
  // load per plane per 32 steps (the warp's 32 loads cover 32 * width consecutive words), one broadcast
  // shuffle per plane per step. Other raw fields (field 0 raw: incompressible) load as v1 does.
  constexpr int kStagedPlanes = 7;
  typename W::template Reg<uint32_t> bcur[NT], bnxt[NT], pcur[kStagedPlanes], pnxt[kStagedPlanes];
  auto stage_bytes = [&](int f, uint32_t g, typename W::template Reg<uint32_t>& dst) {
    const uint8_t* base = fdata[f] + uint64_t(g) * 128;
    W::each([&](int l) { dst[l] = uint64_t(g) * 128 + 4 * uint32_t(l) + 4 <= n_pad ? ld32(base + 4 * l) : 0u; });
  };
  auto stage_planes = [&](int f, uint32_t g) {
    const int width = fl.width[f];
    const uint8_t* base = fdata[f] + uint64_t(g) * 32 * uint64_t(width) * 4;
    NZ_UNROLL
    for (int j = 0; j < kStagedPlanes; j++) {
      if (j >= width) break;
      W::each([&](int l) {
        pnxt[j][l] = uint64_t(g) * 32 + uint32_t(l) < steps ? ld32(base + 4 * (uint64_t(l) * width + j)) : 0u;
      });
    }
  };
  auto staged_planes = [&](int f) { return V == kV2 && f == 1 && !(mask >> f & 1) && fl.width[f] <= kStagedPlanes; };
  if (V == kV2) {
    NZ_UNROLL
    for (int f = 0; f < NT; f++) {
      if (f >= fl.n || (mask >> f & 1)) continue;
      if (fl.width[f] == 8)
        stage_bytes(f, 0, bnxt[f]);
      else if (staged_planes(f))
        stage_planes(f, 0);
    }
  }

  const int drop = d.mant_bits - px.keep;
  const uint32_t inf = exp_all_ones(d);
  const int eb = d.bits / 8;
  uint8_t* out = px.dst + cv.begin * uint64_t(eb);
  uint32_t norm_bad = 0;
  for (uint32_t s = 0; s < steps; s++) {
    const uint32_t i0 = s * kLanes;
    typename W::template Reg<uint32_t> q;
    W::each([&](int l) { q[l] = 0; });
    NZ_UNROLL
    for (int f = 0; f < NT; f++) {
      if (f >= fl.n) continue;
      const int shift = fl.shift[f], width = fl.width[f];
      if (mask >> f & 1) {
        const uint32_t* table = tabs.get(tix[f]);
        W::each([&](int l) {
          if (i0 + l < n) q[l] |= rans_decode_step(x[f][l], table) << shift;
        });
        const uint32_t need = W::ballot([&](int l) { return i0 + l < n && x[f][l] < kRansL; });
        if (need) {
          const uint32_t r = pos[f] - base[f];
          auto src = [&](int l) { return int(r + popc(need & lanemask_lt(l))); };
          typename W::template Reg<uint32_t> w0 = W::shfl(b0[f], src), w1 = W::shfl(b1[f], src);
          W::each([&](int l) {
            if (need >> l & 1) x[f][l] = (x[f][l] << 16) | (uint32_t(src(l)) < 32 ? w0[l] : w1[l]);
          });
          pos[f] += popc(need);
          if (pos[f] - base[f] >= 32) {
            base[f] += 32;
            const uint8_t* words = fdata[f];
            const uint32_t nw = nwords[f], nb = base[f] + 32;
            W::each([&](int l) {
              b0[f][l] = b1[f][l];
              b1[f][l] = nb + l < nw ? ld16(words + 2 * uint64_t(nb + l)) : 0u;
            });
          }
        }
      } else if (V == kV2 && width == 8) {
        const uint32_t sub = s & 3u;
        if (sub == 0) {
          W::each([&](int l) { bcur[f][l] = bnxt[f][l]; });
          stage_bytes(f, s / 4 + 1, bnxt[f]);
        }
        // Element 32 s + l is byte 32 sub + l of the group: lane 8 sub + l / 4, byte l % 4 of its word.
        typename W::template Reg<uint32_t> v = W::shfl(bcur[f], [&](int l) { return int(8 * sub + (l >> 2)); });
        W::each([&](int l) { q[l] |= ((v[l] >> (8 * (l & 3))) & 0xFFu) << shift; });
      } else if (staged_planes(f)) {
        const uint32_t sub = s & 31u;
        if (sub == 0) {
          NZ_UNROLL
          for (int j = 0; j < kStagedPlanes; j++) {
            if (j >= width) break;
            W::each([&](int l) { pcur[j][l] = pnxt[j][l]; });
          }
          stage_planes(f, s / 32 + 1);
        }
        NZ_UNROLL
        for (int j = 0; j < kStagedPlanes; j++) {
          if (j >= width) break;
          const uint32_t w = W::bcast(pcur[j], int(sub));
          W::each([&](int l) { q[l] |= rotr(w, uint32_t(l - shift - j) & 31u) & (1u << (shift + j)); });
        }
      } else if (width == 8) {
        const uint8_t* bytes = fdata[f] + i0;
        W::each([&](int l) { q[l] |= uint32_t(bytes[l]) << shift; });
      } else {
        const uint8_t* planes = fdata[f] + uint64_t(s) * width * 4;
        for (int j = 0; j < width; j++) {
          // Bit l of plane j goes to bit shift+j: one rotate and one masked OR per plane.
          const uint32_t w = ld32(planes + 4 * j);
          W::each([&](int l) { q[l] |= rotr(w, uint32_t(l - shift - j) & 31u) & (1u << (shift + j)); });
        }
      }
    }
    W::each([&](int l) {
      const uint32_t i = i0 + l;
      if (i >= n) return;
      uint32_t u = q[l] << drop;
      if (px.normalized && (u & inf) != inf) {
        const float sc = bits_f32(ld32(cv.norms + 4 * ((cv.begin + i) / px.block_size)));
        if (!(sc >= 1.f && sc < 2.f)) norm_bad = 1;  // benign race on the host-emulated flag: all write 1
        u = float_to_dtype(dtype_to_float(u, px.dtype) * sc, px.dtype);
      }
      if (eb == 2)
        st16(out + 2 * uint64_t(i), u);
      else
        st32(out + 4 * uint64_t(i), u);
    });
  }
  uint32_t err = 0;
  if (W::ballot([&](int) { return norm_bad != 0; })) err |= kErrNorm;
  NZ_UNROLL
  for (int f = 0; f < NT; f++) {
    if (f >= fl.n || !(mask >> f & 1)) continue;
    if (pos[f] != nwords[f] || W::ballot([&](int l) { return x[f][l] != kRansL; })) err |= kErrStream;
  }
  return err;
}

// Elements [lo, hi) of eb-byte elements from `from` to `to`, a lane per element (raw payloads and raw slots).
template <class W>
NZ_HD void copy_elements(const uint8_t* from, uint8_t* to, uint64_t lo, uint64_t hi, uint64_t eb) {
  for (uint64_t i0 = lo; i0 < hi; i0 += kLanes) {
    W::each([&](int l) {
      const uint64_t i = i0 + l;
      if (i >= hi) return;
      if (eb == 2)
        st16(to + 2 * i, ld16(from + 2 * i));
      else
        st32(to + 4 * i, ld32(from + 4 * i));
    });
  }
}

template <class W, int NT, int V, class Tables>
NZ_HD void decode_payload_item(const DecodeJob& job, const uint8_t* src, uint64_t src_len, uint64_t item,
                               Tables& tables, const uint32_t* crc_table, bool verify);

// One work item of a batched decode. tables: NT * 2048 u32 of warp-private (shared) memory; crc_table: 256
// u32, needed only when verify is set (then chunk, header and index CRCs are checked as the CPU does). A slot job
// (kJobSlot) parses the slot header first: raw slots are copied, payload slots decoded like a payload.
template <class W, int NT, int V, class Tables>
NZ_HD void decode_item(const DecodeJob& job, uint64_t item, Tables& tables, const uint32_t* crc_table, bool verify) {
  const uint8_t* src = reinterpret_cast<const uint8_t*>(job.src);
  if (!(job.flags & kJobSlot)) {
    decode_payload_item<W, NT, V>(job, src, job.src_len, item, tables, crc_table, verify);
    return;
  }
  const uint64_t eb = uint64_t(dtype_info(uint8_t(job.dtype)).bits / 8);
  SlotView sv;
  const uint32_t e = eb ? check_slot(src, job.src_len, job.numel * eb, sv) : uint32_t(kErrMismatch);
  if (e) {
    if (item == 0) W::report(reinterpret_cast<uint32_t*>(job.err), e);
    return;
  }
  if (sv.kind == kSlotRaw) {
    const uint64_t lo = item * uint64_t(job.grain);
    const uint64_t hi = lo + job.grain < job.numel ? lo + job.grain : job.numel;
    copy_elements<W>(src + kSlotHeaderBytes, reinterpret_cast<uint8_t*>(job.dst), lo, hi, eb);
    return;
  }
  decode_payload_item<W, NT, V>(job, src + kSlotHeaderBytes, sv.len, item, tables, crc_table, verify);
}

template <class W, int NT, int V, class Tables>
NZ_HD void decode_payload_item(const DecodeJob& job, const uint8_t* src, uint64_t src_len, uint64_t item,
                               Tables& tables, const uint32_t* crc_table, bool verify) {
  uint32_t* err = reinterpret_cast<uint32_t*>(job.err);
  HeaderFields h;
  uint32_t e = parse_head(src, src_len, h);
  if (!e && (h.dtype != job.dtype || h.numel != job.numel)) e = kErrMismatch;
  if (!e && verify && item == 0 && header_crc(src, h.header_bytes, crc_table) != ld32(src + kOffHeaderCrc)) e = kErrCrc;
  if (e) {
    if (item == 0) W::report(err, e);  // once per payload; every item stops here
    return;
  }
  const DTypeInfo d = dtype_info(h.dtype);
  const uint64_t eb = uint64_t(d.bits / 8);
  const uint64_t lo = item * uint64_t(job.grain);
  const uint64_t hi = lo + job.grain < h.numel ? lo + job.grain : h.numel;
  if (h.mode == kModeRaw) {
    if (verify && item == 0) {
      uint32_t acc = crc_piece<W>(src + h.header_bytes, h.total_bytes - h.header_bytes, 0, crc_table);
      if (crc_finish(acc, h.total_bytes - h.header_bytes) != ld32(src + kOffMetaCrc)) W::report(err, kErrCrc);
    }
    copy_elements<W>(src + h.header_bytes, reinterpret_cast<uint8_t*>(job.dst), lo, hi, eb);
    return;
  }
  // Coded: normalisers and chunk index must lie inside the payload.
  Sections sec;
  if (check_sections(h, sec) != kSectionsOk) {
    if (item == 0) W::report(err, kErrIndex);
    return;
  }
  const uint8_t* norms = (h.flags & kFlagNormalized) ? src + sec.norms_off : nullptr;
  const uint8_t* index = src + sec.index_off;
  const uint64_t index_end = sec.chunks_off;
  if (verify && item == 0) {
    uint32_t acc = crc_piece<W>(src + h.header_bytes, index_end - h.header_bytes, 0, crc_table);
    if (crc_finish(acc, index_end - h.header_bytes) != ld32(src + kOffMetaCrc)) W::report(err, kErrCrc);
  }
  const PayloadCtx px{reinterpret_cast<uint8_t*>(job.dst), h.dtype, int(h.keep_bits), h.block_size,
                      bool(h.flags & kFlagNormalized)};
  const uint64_t ce = h.chunk_elems;
  const uint64_t c_lo = (lo + ce - 1) / ce;
  uint64_t c_hi = (hi + ce - 1) / ce;
  if (c_hi > h.num_chunks) c_hi = h.num_chunks;
  for (uint64_t c = c_lo; c < c_hi; c++) {
    const uint64_t start = ld64(index + 8 * c), end = ld64(index + 8 * (c + 1));
    if ((c == 0 && start != index_end) || start < index_end || start % kAlign || end % kAlign || end > h.total_bytes ||
        end < start + kChunkHeaderBytes) {
      W::report(err, kErrIndex);
      continue;
    }
    ChunkView cv;
    cv.ch = src + start;
    cv.size = end - start;
    cv.begin = c * ce;
    cv.n = uint32_t(h.numel - cv.begin < ce ? h.numel - cv.begin : ce);
    cv.norms = norms;
    if (verify) {
      uint32_t acc = crc_piece<W>(cv.ch + 4, cv.size - 4, 0, crc_table);
      if (crc_finish(acc, cv.size - 4) != ld32(cv.ch + kChunkOffCrc)) {
        W::report(err, kErrCrc);
        continue;
      }
    }
    if (uint32_t ce2 = decode_chunk<W, NT, V>(px, cv, tables)) W::report(err, ce2);
  }
}

// ---- encode ----------------------------------------------------------------------------------------------------
struct EncodeCfg {
  uint64_t numel;
  uint64_t num_chunks;
  uint64_t slot_bytes;  // staging bytes per chunk: the all-raw chunk size for chunk_elems elements
  uint32_t chunk_elems;
  uint32_t block_size;  // 0 = no normalisation
  int32_t keep;         // kept mantissa bits (the dtype's full width when lossless)
  uint8_t dtype;
  uint8_t lossless;
  uint8_t ndim;
  uint8_t pad;
  int64_t shape[kMaxNdim];
};

// Written by encode_chunk for the compaction kernel: where the chunk's pieces sit in its staging slot.
struct ChunkMeta {
  uint32_t size;   // final chunk bytes
  uint32_t front;  // bytes [0, front) of the slot are final: header, coded headers+tables, raw fields
  uint32_t mask;   // coded fields
  uint32_t err;
  uint32_t stream_off[kMaxFields];  // slot offset of each coded field's word stream (2-byte aligned)
  uint32_t n_words[kMaxFields];
  uint32_t reserved[4];
};
static_assert(sizeof(ChunkMeta) == 64, "ChunkMeta layout is shared with the device kernels");

NZ_HD uint64_t raw_chunk_bytes(uint8_t dtype, int keep, uint32_t n) {
  const FieldLayout fl = field_layout(dtype, keep);
  const uint64_t n_pad = (uint64_t(n) + kLanes - 1) / kLanes * kLanes;
  uint64_t b = kChunkHeaderBytes;
  for (int f = 0; f < fl.n; f++) b += align_up(raw_field_bytes(fl.width[f], n_pad));
  return b;
}

// The encoder's configuration for one tensor (host side; the CUDA encoder and its host simulation share it).
// False for parameters the format cannot hold.
inline bool make_encode_cfg(uint64_t numel, const int64_t* shape, int ndim, int dtype, int keep, uint32_t block_size,
                            uint32_t chunk_elems, EncodeCfg& cfg) {
  const DTypeInfo d = dtype_info(uint8_t(dtype));
  if (d.bits == 0 || ndim < 0 || ndim > int(kMaxNdim) || keep < 0 || keep > d.mant_bits) return false;
  if (!chunk_elems_ok(chunk_elems)) return false;
  cfg = EncodeCfg{};
  cfg.numel = numel;
  cfg.chunk_elems = chunk_elems;
  cfg.num_chunks = (numel + chunk_elems - 1) / chunk_elems;
  cfg.block_size = block_size;
  cfg.keep = keep;
  cfg.dtype = uint8_t(dtype);
  cfg.lossless = keep == d.mant_bits && block_size == 0;
  cfg.ndim = uint8_t(ndim);
  for (int i = 0; i < ndim && shape; i++) cfg.shape[i] = shape[i];
  cfg.slot_bytes = raw_chunk_bytes(cfg.dtype, keep, chunk_elems);
  return cfg.num_chunks <= 0xFFFFFFFFull;
}

// q of element i (the CPU's encode_chunk quantisation): lossy rounding after block normalisation.
NZ_HD uint32_t quantize(const EncodeCfg& cfg, const DTypeInfo& d, const uint8_t* src, const float* norms, uint64_t i,
                        bool& nan_bad) {
  uint32_t u = d.bits == 16 ? uint32_t(ld16(src + 2 * i)) : ld32(src + 4 * i);
  const int drop = d.mant_bits - cfg.keep;
  if (!cfg.lossless) {
    if (norms && (u & exp_all_ones(d)) != exp_all_ones(d)) {
      const float s = norms[i / cfg.block_size];
      u = float_to_dtype(dtype_to_float(u, cfg.dtype) / s, cfg.dtype);
    }
    if (cfg.keep == 0 && (u & (sign_bit(d) - 1)) > exp_all_ones(d)) nan_bad = true;
    u = round_mantissa(u, d, cfg.keep);
  }
  return u >> drop;
}

// 2 * frexp(m).fraction for a finite m > 0, by bits (the CPU's block_normaliser; exact, subnormals included).
NZ_HD float normaliser_from_max(float m) {
  if (!(m > 0.f)) return 1.f;
  uint32_t b = f32_bits(m);
  uint32_t man = b & 0x7FFFFFu;
  if ((b >> 23) == 0) {  // subnormal: normalise the significand
    while (!(man & 0x800000u)) man <<= 1;
    man &= 0x7FFFFFu;
  }
  return bits_f32((127u << 23) | man);
}

// |x| as float if finite, else 0 (ignored by the max).
NZ_HD float finite_abs(uint32_t u, uint8_t dtype) {
  const DTypeInfo d = dtype_info(dtype);
  if ((u & exp_all_ones(d)) == exp_all_ones(d)) return 0.f;
  const float a = dtype_to_float(u, dtype);
  return a < 0.f ? -a : a;
}

// Encode chunk c into its staging slot (slot_bytes bytes, 16-aligned). counts, fc: 1024 u32 each of
// warp-private memory; crc_table: 256 u32. Field streams are written back to front from the slot's end; the
// front (header, coded field headers+tables, raw fields) is written in its final layout from the start. The
// two never meet: a field is coded only when that is smaller than storing it raw (the CPU's rule), and a field
// whose words outgrow its raw size is abandoned as raw before it writes past that budget.
template <class W>
NZ_HD void encode_chunk(const EncodeCfg& cfg, const uint8_t* src, const float* norms, uint64_t c, uint8_t* slot,
                        ChunkMeta* meta, uint32_t* counts, uint32_t* fc, const uint32_t* crc_table) {
  const DTypeInfo d = dtype_info(cfg.dtype);
  const FieldRegs fl = field_regs(cfg.dtype, cfg.keep);  // closed form: no local-memory arrays
  const uint64_t begin = c * cfg.chunk_elems;
  const uint32_t n = uint32_t(cfg.numel - begin < cfg.chunk_elems ? cfg.numel - begin : cfg.chunk_elems);
  const uint32_t n_pad = (n + kLanes - 1) / kLanes * kLanes;
  const uint32_t steps = n_pad / kLanes;
  typename W::template Reg<uint32_t> nan_bad;
  W::each([&](int l) { nan_bad[l] = 0; });
  auto value = [&](uint32_t i, int f, int l) -> uint32_t {
    if (i >= n) return 0u;
    bool bad = false;
    uint32_t q = quantize(cfg, d, src, norms, begin + i, bad);
    if (bad) nan_bad[l] = 1;
    return (q >> field_shift(fl, f)) & ((1u << field_width(fl, f)) - 1u);
  };

  uint32_t coded_mask = 0, front = kChunkHeaderBytes, tail = uint32_t(cfg.slot_bytes);
  uint32_t stream_off[kMaxFields] = {}, n_words[kMaxFields] = {};
  for (int f = 0; f < fl.n; f++) {
    const int width = field_width(fl, f);
    const uint32_t alphabet = 1u << width;
    const uint32_t raw_bytes = uint32_t(raw_field_bytes(width, n_pad));
    // Histogram.
    for (uint32_t s0 = 0; s0 < alphabet; s0 += kLanes)
      W::each([&](int l) {
        if (s0 + l < alphabet) counts[s0 + l] = 0;
      });
    W::sync();
    for (uint32_t i0 = 0; i0 < n; i0 += kLanes)
      W::each([&](int l) {
        if (i0 + l < n) W::atomic_add(&counts[value(i0 + l, f, l)], 1u);
      });
    W::sync();
    // Entropy estimate, summed in ascending symbol order as the CPU does (same doubles, same rounding).
    uint32_t n_used = 0;
    double bits = 0;
    const double ln = dlog2(double(n));
    for (uint32_t s0 = 0; s0 < alphabet; s0 += kLanes) {
      typename W::template Reg<double> term;
      W::each([&](int l) {
        const uint32_t cnt = s0 + l < alphabet ? counts[s0 + l] : 0u;
        term[l] = cnt ? dmul(double(cnt), dsub(ln, dlog2(double(cnt)))) : 0.0;
      });
      uint32_t used = W::ballot([&](int l) { return s0 + l < alphabet && counts[s0 + l] != 0; });
      n_used += popc(used);
      while (used) {
        const int b = lowest_bit(used);
        bits = dadd(bits, W::bcast(term, b));
        used &= used - 1;
      }
    }
    bool coded = false;
    if (field_worth_coding(n, bits, n_used, raw_bytes)) {
      // normalise(): identical integer arithmetic, parallel over symbols.
      typename W::template Reg<uint32_t> part, bestv, besti;
      W::each([&](int l) {
        part[l] = 0;
        bestv[l] = 0;
        besti[l] = 0xFFFFFFFFu;
      });
      for (uint32_t s0 = 0; s0 < alphabet; s0 += kLanes)
        W::each([&](int l) {
          const uint32_t s = s0 + l;
          if (s >= alphabet) return;
          const uint32_t cnt = counts[s];
          uint32_t fq = 0;
          if (cnt) {
            const uint64_t v = (uint64_t(cnt) * kProbScale + n / 2) / n;
            fq = v ? uint32_t(v) : 1u;
          }
          fc[s] = fq;
          part[l] += fq;
          if (cnt > bestv[l] || besti[l] == 0xFFFFFFFFu) bestv[l] = cnt, besti[l] = s;
        });
      W::sync();
      int64_t diff = int64_t(kProbScale) - int64_t(W::sum(part));
      if (diff >= 0) {
        const uint32_t top = W::argmax(bestv, besti);
        W::each([&](int l) {
          if (l == 0) fc[top] += uint32_t(diff);
        });
        W::sync();
        diff = 0;
      }
      while (diff < 0) {  // take from the largest frequency (lowest symbol on ties), never below 1
        W::each([&](int l) {
          bestv[l] = 0;
          besti[l] = 0xFFFFFFFFu;
          for (uint32_t s = uint32_t(l); s < alphabet; s += kLanes)
            if (fc[s] > bestv[l] || besti[l] == 0xFFFFFFFFu) bestv[l] = fc[s], besti[l] = s;
        });
        const uint32_t big = W::argmax(bestv, besti);
        const uint32_t fbig = fc[big];
        const uint32_t take = uint32_t(-diff < int64_t(fbig) - 1 ? -diff : int64_t(fbig) - 1);
        if (take == 0) break;  // cannot happen (sum > 2048 means some frequency > 1); leaves the field raw
        W::sync();
        W::each([&](int l) {
          if (l == 0) fc[big] -= take;
        });
        W::sync();
        diff += take;
      }
      if (diff == 0) {
        // cum in ascending symbol order: each lane owns a run of `per` symbols. fc[s] = freq | cum << 12.
        const uint32_t per = (alphabet + kLanes - 1) / kLanes;
        typename W::template Reg<uint32_t> run;
        W::each([&](int l) {
          run[l] = 0;
          for (uint32_t s = l * per; s < (l + 1) * per && s < alphabet; s++) run[l] += fc[s];
        });
        typename W::template Reg<uint32_t> start = W::scan_excl(run);
        W::sync();
        W::each([&](int l) {
          uint32_t cum = start[l];
          for (uint32_t s = l * per; s < (l + 1) * per && s < alphabet; s++) {
            const uint32_t fq = fc[s];
            fc[s] = fq | cum << 12;
            cum += fq;
          }
        });
        W::sync();
        // rANS back to front; step s's words land below step s+1's, ascending lanes at ascending addresses.
        const uint32_t budget = raw_bytes / 2;  // words; more can never be coded
        uint32_t written = 0;
        bool over = false;
        typename W::template Reg<uint32_t> x;
        W::each([&](int l) { x[l] = kRansL; });
        for (uint32_t s = steps; s-- > 0 && !over;) {
          const uint32_t i0 = s * kLanes;
          typename W::template Reg<uint32_t> sym;
          W::each([&](int l) { sym[l] = value(i0 + l, f, l); });
          const uint32_t emit = W::ballot([&](int l) {
            return i0 + l < n && uint64_t(x[l]) >= (uint64_t(fc[sym[l]] & 0xFFFu) << (32 - kProbBits));
          });
          const uint32_t cnt = uint32_t(popc(emit));
          if (written + cnt > budget) {
            over = true;
            break;
          }
          W::each([&](int l) {
            if (i0 + l >= n) return;
            const uint32_t e = fc[sym[l]], fq = e & 0xFFFu, cum = e >> 12;
            uint32_t xv = x[l];
            if (emit >> l & 1) {
              const uint32_t at = tail - 2 * (written + cnt) + 2 * uint32_t(popc(emit & lanemask_lt(l)));
              st16(slot + at, xv & 0xFFFFu);
              xv >>= 16;
            }
            x[l] = ((xv / fq) << kProbBits) + (xv % fq) + cum;
          });
          written += cnt;
        }
        if (!over && coded_field_bytes(n_used, written) < raw_bytes) {
          coded = true;
          coded_mask |= 1u << f;
          tail -= 2 * written;
          stream_off[f] = tail;
          n_words[f] = written;
          // Field header + table at its final place in the front.
          uint8_t* fh = slot + front;
          W::each([&](int l) { st32(fh + 8 + 4 * l, x[l]); });
          W::each([&](int l) {
            if (l == 0) {
              st16(fh, n_used);
              st16(fh + 2, 0);
              st32(fh + 4, written);
            }
          });
          typename W::template Reg<uint32_t> used;
          W::each([&](int l) {
            used[l] = 0;
            for (uint32_t s = l * per; s < (l + 1) * per && s < alphabet; s++) used[l] += (fc[s] & 0xFFFu) != 0;
          });
          typename W::template Reg<uint32_t> rank = W::scan_excl(used);
          W::each([&](int l) {
            uint32_t r = rank[l];
            for (uint32_t s = l * per; s < (l + 1) * per && s < alphabet; s++) {
              const uint32_t fq = fc[s] & 0xFFFu;
              if (!fq) continue;
              const uint32_t e = s | (fq - 1) << 10;
              uint8_t* p = fh + kFieldHeaderBytes + kTableEntryBytes * r++;
              p[0] = uint8_t(e);
              p[1] = uint8_t(e >> 8);
              p[2] = uint8_t(e >> 16);
            }
          });
          const uint32_t end = front + kFieldHeaderBytes + kTableEntryBytes * n_used;
          front = uint32_t(align_up(end));
          W::each([&](int l) {
            if (end + l < front) slot[end + l] = 0;
          });
        }
      }
    }
    (void)coded;
    W::sync();
  }
  // Raw fields, in field order after the coded headers.
  for (int f = 0; f < fl.n; f++) {
    if (coded_mask >> f & 1) continue;
    const int width = field_width(fl, f);
    uint8_t* dst = slot + front;
    for (uint32_t s = 0; s < steps; s++) {
      const uint32_t i0 = s * kLanes;
      typename W::template Reg<uint32_t> v;
      W::each([&](int l) { v[l] = value(i0 + l, f, l); });
      if (width == 8) {
        W::each([&](int l) { dst[i0 + l] = uint8_t(v[l]); });
      } else {
        for (int j = 0; j < width; j++) {
          const uint32_t plane = W::ballot([&](int l) { return (v[l] >> j) & 1u; });
          W::each([&](int l) {
            if (l == 0) st32(dst + (uint64_t(s) * width + j) * 4, plane);
          });
        }
      }
    }
    const uint32_t end = front + uint32_t(raw_field_bytes(width, n_pad));
    front = uint32_t(align_up(end));
    W::each([&](int l) {
      if (end + l < front) slot[end + l] = 0;
    });
  }
  W::each([&](int l) {
    if (l < int(kChunkHeaderBytes) / 4) st32(slot + 4 * l, 0);
  });
  W::sync();
  W::each([&](int l) {
    if (l == 0) {
      st32(slot + kChunkOffElems, n);
      slot[kChunkOffCodedMask] = uint8_t(coded_mask);
    }
  });
  W::sync();
  // Final size and CRC over [4, size) of the final layout: the front, then each coded stream at its final
  // offset (its zero padding contributes nothing to the raw CRC, only length).
  uint32_t size = front;
  for (int f = 0; f < fl.n; f++)
    if (coded_mask >> f & 1) size += uint32_t(align_up(2 * uint64_t(n_words[f])));
  uint32_t acc = crc_piece<W>(slot + 4, front - 4, size - front, crc_table);
  uint32_t at = front;
  for (int f = 0; f < fl.n; f++) {
    if (!(coded_mask >> f & 1)) continue;
    const uint32_t len = 2 * n_words[f];
    acc ^= crc_piece<W>(slot + stream_off[f], len, size - at - len, crc_table);
    at += uint32_t(align_up(len));
  }
  const uint32_t crc = crc_finish(acc, size - 4);
  const uint32_t nan_flag = W::ballot([&](int l) { return nan_bad[l] != 0; }) ? uint32_t(kErrNanLossy) : 0u;
  W::each([&](int l) {
    if (l == 0) {
      st32(slot + kChunkOffCrc, crc);
      meta->size = size;
      meta->front = front;
      meta->mask = coded_mask;
      meta->err = nan_flag;
      for (int f = 0; f < kMaxFields; f++) {
        meta->stream_off[f] = stream_off[f];
        meta->n_words[f] = n_words[f];
      }
    }
  });
  W::sync();
}

// Copy chunk c from its staging slot to its final place (out + offset): the front, then each stream followed by
// its zero padding. Lane-parallel, 16-byte copies for the front.
template <class W>
NZ_HD void place_chunk(const uint8_t* slot, const ChunkMeta& m, uint8_t* out) {
  for (uint32_t o = 0; o < m.front; o += 4 * kLanes)
    W::each([&](int l) {
      const uint32_t p = o + 4 * l;
      if (p < m.front) st32(out + p, ld32(slot + p));
    });
  uint32_t at = m.front;
  for (int f = 0; f < kMaxFields; f++) {
    if (!(m.mask >> f & 1)) continue;
    const uint32_t len = 2 * m.n_words[f], padded = uint32_t(align_up(len));
    const uint8_t* s = slot + m.stream_off[f];
    for (uint32_t o = 0; o < padded; o += 2 * kLanes)
      W::each([&](int l) {
        const uint32_t p = o + 2 * l;
        if (p < padded) st16(out + at + p, p < len ? ld16(s + p) : 0u);
      });
    at += padded;
  }
}

// Payload layout once all chunk sizes are known (the CPU's encode(): coded layout, or raw when lossless and the
// raw layout is no larger).
struct Layout {
  uint64_t header_bytes, norm_bytes, index_bytes, coded_total, raw_total, total;
  uint32_t mode;
};

NZ_HD Layout plan_layout(const EncodeCfg& cfg, uint64_t sum_chunk_bytes) {
  Layout L;
  const DTypeInfo d = dtype_info(cfg.dtype);
  L.header_bytes = header_bytes_for(cfg.ndim);
  L.norm_bytes = cfg.block_size ? align_up(4 * ((cfg.numel + cfg.block_size - 1) / cfg.block_size)) : 0;
  L.index_bytes = align_up(8 * (cfg.num_chunks + 1));
  L.coded_total = L.header_bytes + L.norm_bytes + L.index_bytes + sum_chunk_bytes;
  L.raw_total = raw_payload_bytes(L.header_bytes, cfg.numel, uint64_t(d.bits / 8));
  const bool raw = payload_stored_raw(cfg.lossless, L.raw_total, L.coded_total);
  L.mode = raw ? kModeRaw : kModeCoded;
  L.total = raw ? L.raw_total : L.coded_total;
  return L;
}

// Header fields except the two CRCs (single thread).
NZ_HD void write_header(const EncodeCfg& cfg, const Layout& L, uint8_t* h) {
  for (uint64_t i = 0; i < L.header_bytes; i += 4) st32(h + i, 0);
  const bool coded = L.mode == kModeCoded;
  // Normalised only when there is at least one block (the CPU encoder's rule: an empty tensor has no norms).
  const bool normalized = coded && cfg.block_size && cfg.numel;
  const uint8_t flags = coded ? uint8_t((cfg.lossless ? 0 : kFlagLossy) | (normalized ? kFlagNormalized : 0)) : 0;
  st32(h + kOffMagic, kMagic);
  st16(h + kOffVersion, kVersion);
  st16(h + kOffHeaderBytes, uint32_t(L.header_bytes));
  h[kOffDtype] = cfg.dtype;
  h[kOffMode] = uint8_t(L.mode);
  h[kOffKeepBits] = uint8_t(cfg.keep);
  h[kOffNdim] = cfg.ndim;
  h[kOffProbBits] = coded ? kProbBits : 0;
  h[kOffFlags] = flags;
  st64(h + kOffNumel, cfg.numel);
  st32(h + kOffChunkElems, coded ? cfg.chunk_elems : 0);
  st32(h + kOffNumChunks, coded ? uint32_t(cfg.num_chunks) : 0);
  st32(h + kOffBlockSize, normalized ? cfg.block_size : 0);
  st64(h + kOffTotalBytes, L.total);
  for (int i = 0; i < cfg.ndim; i++) st64(h + kOffShape + 8 * i, uint64_t(cfg.shape[i]));
}

// The checksummed region after the header: [header_bytes, meta_end).
NZ_HD uint64_t meta_end(const Layout& L) {
  return L.mode == kModeRaw ? L.total : L.header_bytes + L.norm_bytes + L.index_bytes;
}

}  // namespace gpu
}  // namespace nz
