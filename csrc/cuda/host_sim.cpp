// Host build of the GPU codec's shared per-chunk code (chunk.h) with HostWarp: the same decode_item /
// encode_chunk / place_chunk the kernels run, driven in the order the kernels of decode.cu and encode.cu run
// them. tests/cuda compile this file with the system C++ compiler and load it with ctypes, so the GPU's
// per-lane logic is checked against the CPU codec on machines without a GPU. Not part of the built package.
#include <cstdint>
#include <cstring>
#include <vector>

#include "chunk.h"

using namespace nz;
using namespace nz::gpu;

namespace {

struct CrcTable {
  uint32_t t[256];
  CrcTable() {
    for (uint32_t i = 0; i < 256; i++) t[i] = crc_table_entry(i);
  }
};
const CrcTable kCrc;

// Scheduling order of work items is free on the GPU; run them back to front here so nothing relies on order.
template <int NT, int V>
void decode_jobs(const DecodeJob* jobs, int n_jobs, bool verify) {
  std::vector<uint32_t> tables(static_cast<size_t>(NT + 1) * kProbScale);
  FixedTables fixed{tables.data()};
  // v3: the warp's own table, and a pool of NT slots of which slot 0 is held by "another warp" throughout, so
  // the tables a chunk takes are not simply the first ones.
  uint32_t pool_word = 1;
  PooledTables pooled{tables.data(), tables.data() + kProbScale, &pool_word, NT, 0};
  for (int j = n_jobs; j-- > 0;) {
    const uint64_t items = job_items(jobs[j].numel, jobs[j].grain);
    for (uint64_t it = items; it-- > 0;) {
      if (V == kV3)
        decode_item<HostWarp, NT, V>(jobs[j], it, pooled, kCrc.t, verify);
      else
        decode_item<HostWarp, NT, V>(jobs[j], it, fixed, kCrc.t, verify);
    }
  }
}

template <int NT>
void decode_variant(const DecodeJob* jobs, int n_jobs, int variant, bool verify) {
  if (variant == kV2)
    decode_jobs<NT, kV2>(jobs, n_jobs, verify);
  else if (variant == kV3)
    decode_jobs<NT, kV3>(jobs, n_jobs, verify);
  else
    decode_jobs<NT, kV1>(jobs, n_jobs, verify);
}

}  // namespace

extern "C" {

// jobs: n_jobs DecodeJob records (8 x u64 each) with host addresses. Errors land in each job's error word.
// variant: 1, 2 or 3 (chunk.h's Variant), the kernel whose per-chunk code runs.
void nzsim_decode_batch(const void* jobs, int n_jobs, int max_fields, int verify, int variant) {
  const auto* js = static_cast<const DecodeJob*>(jobs);
  if (max_fields <= 2)
    decode_variant<2>(js, n_jobs, variant, verify != 0);
  else
    decode_variant<4>(js, n_jobs, variant, verify != 0);
}

// Mismatches between field_layout (format.h) and the closed form the decode kernel uses, over every dtype and
// kept-bit count.
int nzsim_field_layout_mismatches() {
  int bad = 0;
  for (uint8_t dt : {uint8_t(kBF16), uint8_t(kFP16), uint8_t(kFP32)}) {
    for (int keep = 0; keep <= dtype_info(dt).mant_bits; keep++) {
      const FieldLayout fl = field_layout(dt, keep);
      const FieldRegs fr = field_regs(dt, keep);
      bad += fl.n != fr.n;
      for (int f = 0; f < fl.n; f++) bad += fl.width[f] != field_width(fr, f) || fl.shift[f] != field_shift(fr, f);
    }
  }
  return bad;
}

uint32_t nzsim_crc32c_pieces(const uint8_t* p, uint64_t n, uint64_t piece) {
  // crc32c of p[0:n) computed as XOR of shifted raw CRCs of `piece`-byte pieces (the GPU's combination).
  uint32_t acc = 0;
  for (uint64_t a = 0; a < n; a += piece) {
    uint64_t b = a + piece < n ? a + piece : n;
    acc ^= crc_shift(crc_update(0, p + a, b - a, kCrc.t), n - b);
  }
  return crc_finish(acc, n);
}

// Encode as encode.cu does: normalisers, chunks into staging slots, layout, header + normalisers + index,
// compaction, checksums. Returns the payload size; writes it to out when out_cap suffices. err: Err bits.
uint64_t nzsim_encode(const uint8_t* src, uint64_t numel, const int64_t* shape, int ndim, int dtype, int keep,
                      uint32_t block_size, uint32_t chunk_elems, uint8_t* out, uint64_t out_cap, uint32_t* err) {
  EncodeCfg cfg{};
  if (!make_encode_cfg(numel, shape, ndim, dtype, keep, block_size, chunk_elems, cfg)) {
    *err = 1;
    return 0;
  }
  const DTypeInfo d = dtype_info(uint8_t(dtype));
  *err = 0;

  // Kernel 1: block normalisers (one warp per block on the GPU; a max is order-free).
  std::vector<float> norms;
  if (block_size) {
    const uint64_t nb = (numel + block_size - 1) / block_size;
    norms.resize(nb);
    for (uint64_t b = 0; b < nb; b++) {
      float m = 0.f;
      for (uint64_t i = b * block_size; i < numel && i < (b + 1) * block_size; i++) {
        uint32_t u = d.bits == 16 ? uint32_t(ld16(src + 2 * i)) : ld32(src + 4 * i);
        float a = finite_abs(u, cfg.dtype);
        m = a > m ? a : m;
      }
      norms[b] = normaliser_from_max(m);
    }
  }
  // Kernel 2: chunks into staging.
  std::vector<uint8_t> staging(cfg.num_chunks * cfg.slot_bytes);
  std::vector<ChunkMeta> meta(cfg.num_chunks);
  std::vector<uint32_t> counts(1024), fc(1024);
  for (uint64_t c = 0; c < cfg.num_chunks; c++) {
    encode_chunk<HostWarp>(cfg, src, norms.empty() ? nullptr : norms.data(), c, staging.data() + c * cfg.slot_bytes,
                           &meta[c], counts.data(), fc.data(), kCrc.t);
    *err |= meta[c].err;
  }
  // Kernel 3: scan and layout.
  uint64_t sum = 0;
  std::vector<uint64_t> offsets(cfg.num_chunks + 1);
  for (uint64_t c = 0; c < cfg.num_chunks; c++) {
    offsets[c] = sum;
    sum += meta[c].size;
  }
  offsets[cfg.num_chunks] = sum;
  const Layout L = plan_layout(cfg, sum);
  if (*err || out_cap < L.total) return L.total;
  // Kernel 4: header, normalisers, index, chunks (or the raw copy).
  write_header(cfg, L, out);
  if (L.mode == kModeRaw) {
    const uint64_t raw = numel * (d.bits / 8);
    std::memcpy(out + L.header_bytes, src, raw);
    std::memset(out + L.header_bytes + raw, 0, L.total - L.header_bytes - raw);
  } else {
    uint8_t* nz_ = out + L.header_bytes;
    std::memset(nz_, 0, L.norm_bytes + L.index_bytes);
    for (size_t b = 0; b < norms.size(); b++) st32(nz_ + 4 * b, f32_bits(norms[b]));
    uint8_t* index = nz_ + L.norm_bytes;
    const uint64_t head = L.header_bytes + L.norm_bytes + L.index_bytes;
    for (uint64_t c = 0; c <= cfg.num_chunks; c++) st64(index + 8 * c, head + offsets[c]);
    for (uint64_t c = 0; c < cfg.num_chunks; c++)
      place_chunk<HostWarp>(staging.data() + c * cfg.slot_bytes, meta[c], out + head + offsets[c]);
  }
  // Kernel 5: checksum of the region after the header, in 4 KiB pieces XOR-combined.
  const uint64_t me = meta_end(L), len = me - L.header_bytes;
  uint32_t acc = 0;
  for (uint64_t a = 0; a < len; a += 4096) {
    uint64_t b = a + 4096 < len ? a + 4096 : len;
    acc ^= crc_shift(crc_update(0, out + L.header_bytes + a, b - a, kCrc.t), len - b);
  }
  // Kernel 6: seal.
  st32(out + kOffMetaCrc, crc_finish(acc, len));
  st32(out + kOffHeaderCrc, 0);
  st32(out + kOffHeaderCrc, header_crc(out, uint32_t(L.header_bytes), kCrc.t));
  return L.total;
}

}  // extern "C"
