// GPU encode: block normalisers, one warp per chunk into a staging slot (histogram, normalise, rANS back to
// front, layout, chunk CRC), a one-block scan of chunk sizes into the chunk index and the payload layout, then
// (after the host has read the payload size and allocated it) compaction of the variable-size chunks,
// header/normalisers/index, and the checksums. Bytes equal the CPU encoder's; the per-chunk code is chunk.h's.
#include <cuda_runtime.h>

#include "api.h"
#include "chunk.h"

namespace nz {
namespace gpu {
namespace {

static_assert(sizeof(EncodeStatus) == kNzgStatusBytes, "status block layout (records.h)");

constexpr int kEncodeWarps = 4;
constexpr int kScanThreads = 1024;

__device__ void fill_crc_table(uint32_t* t) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) t[i] = crc_table_entry(uint32_t(i));
  __syncthreads();
}

__device__ Layout status_layout(const EncodeStatus* st) {
  Layout L{};
  L.total = st->total;
  L.header_bytes = st->header_bytes;
  L.norm_bytes = st->norm_bytes;
  L.index_bytes = st->index_bytes;
  L.mode = st->mode;
  return L;
}

__global__ void norms_kernel(EncodeCfg cfg, const uint8_t* __restrict__ src, float* __restrict__ norms,
                             uint64_t nblocks) {
  const int lane = threadIdx.x & 31;
  const uint64_t warps = uint64_t(gridDim.x) * (blockDim.x >> 5);
  const int eb = dtype_info(cfg.dtype).bits / 8;
  for (uint64_t b = uint64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); b < nblocks; b += warps) {
    const uint64_t lo = b * cfg.block_size;
    const uint64_t hi = lo + cfg.block_size < cfg.numel ? lo + cfg.block_size : cfg.numel;
    float m = 0.f;
    for (uint64_t i = lo + lane; i < hi; i += 32) {
      const uint32_t u = eb == 2 ? uint32_t(ld16(src + 2 * i)) : ld32(src + 4 * i);
      m = fmaxf(m, finite_abs(u, cfg.dtype));
    }
    for (int d = 16; d > 0; d >>= 1) m = fmaxf(m, __shfl_xor_sync(kFullMask, m, d));  // exact: a max
    if (lane == 0) norms[b] = normaliser_from_max(m);
  }
}

__global__ void __launch_bounds__(kEncodeWarps * 32)
    chunks_kernel(EncodeCfg cfg, const uint8_t* __restrict__ src, const float* __restrict__ norms,
                  uint8_t* __restrict__ staging, ChunkMeta* __restrict__ meta) {
  __shared__ uint32_t crc_table[256];
  __shared__ uint32_t counts[kEncodeWarps][1024];
  __shared__ uint32_t fc[kEncodeWarps][1024];
  fill_crc_table(crc_table);
  const int warp = int(threadIdx.x >> 5);
  const uint64_t stride = uint64_t(gridDim.x) * kEncodeWarps;
  for (uint64_t c = uint64_t(blockIdx.x) * kEncodeWarps + warp; c < cfg.num_chunks; c += stride)
    encode_chunk<DeviceWarp>(cfg, src, norms, c, staging + c * cfg.slot_bytes, meta + c, counts[warp], fc[warp],
                             crc_table);
}

// One block: exclusive scan of chunk sizes (offsets relative to the first chunk), error OR, payload layout.
__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(EncodeCfg cfg, const ChunkMeta* __restrict__ meta, uint64_t* __restrict__ offsets, EncodeStatus* st) {
  __shared__ uint64_t part[kScanThreads];
  __shared__ uint32_t err;
  const uint64_t nc = cfg.num_chunks;
  const uint64_t per = (nc + kScanThreads - 1) / kScanThreads;
  const uint64_t lo = threadIdx.x * per, hi = lo + per < nc ? lo + per : nc;
  if (threadIdx.x == 0) err = 0;
  __syncthreads();
  uint64_t sum = 0;
  uint32_t e = 0;
  for (uint64_t c = lo; c < hi; c++) sum += meta[c].size, e |= meta[c].err;
  if (e) atomicOr(&err, e);
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int d = 1; d < kScanThreads; d <<= 1) {  // inclusive Hillis-Steele scan
    const uint64_t v = threadIdx.x >= unsigned(d) ? part[threadIdx.x - d] : 0;
    __syncthreads();
    part[threadIdx.x] += v;
    __syncthreads();
  }
  uint64_t at = part[threadIdx.x] - sum;
  for (uint64_t c = lo; c < hi; c++) offsets[c] = at, at += meta[c].size;
  if (threadIdx.x == kScanThreads - 1) {
    const uint64_t total_chunks = part[kScanThreads - 1];
    offsets[nc] = total_chunks;
    const Layout L = plan_layout(cfg, total_chunks);
    st->total = L.total;
    st->header_bytes = L.header_bytes;
    st->norm_bytes = L.norm_bytes;
    st->index_bytes = L.index_bytes;
    st->mode = L.mode;
    st->err = err;
    st->crc = 0;
    st->pad = 0;
  }
}

__global__ void write_kernel(EncodeCfg cfg, const uint8_t* __restrict__ src, const float* __restrict__ norms,
                             const uint8_t* __restrict__ staging, const ChunkMeta* __restrict__ meta,
                             const uint64_t* __restrict__ offsets, EncodeStatus* st, uint8_t* __restrict__ out) {
  const Layout L = status_layout(st);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    write_header(cfg, L, out);
    st->crc = 0;  // crc_kernel XORs into it: a second write of the same stage (a benchmark) starts from zero too
  }
  const uint64_t tid = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint64_t nthreads = uint64_t(gridDim.x) * blockDim.x;
  const int eb = dtype_info(cfg.dtype).bits / 8;
  if (L.mode == kModeRaw) {
    uint8_t* to = out + L.header_bytes;
    const uint64_t raw = cfg.numel * eb;
    for (uint64_t i = tid; i < cfg.numel; i += nthreads) {
      if (eb == 2)
        st16(to + 2 * i, ld16(src + 2 * i));
      else
        st32(to + 4 * i, ld32(src + 4 * i));
    }
    for (uint64_t b = raw + tid; b < L.total - L.header_bytes; b += nthreads) to[b] = 0;
    return;
  }
  uint8_t* nrm = out + L.header_bytes;
  const uint64_t nb = cfg.block_size ? (cfg.numel + cfg.block_size - 1) / cfg.block_size : 0;
  for (uint64_t b = tid; b < nb; b += nthreads) st32(nrm + 4 * b, f32_bits(norms[b]));
  for (uint64_t b = 4 * nb + tid; b < L.norm_bytes; b += nthreads) nrm[b] = 0;
  uint8_t* index = nrm + L.norm_bytes;
  const uint64_t head = L.header_bytes + L.norm_bytes + L.index_bytes;
  for (uint64_t c = tid; c <= cfg.num_chunks; c += nthreads) st64(index + 8 * c, head + offsets[c]);
  for (uint64_t b = 8 * (cfg.num_chunks + 1) + tid; b < L.index_bytes; b += nthreads) index[b] = 0;
  const uint64_t warps = nthreads >> 5;
  for (uint64_t c = tid >> 5; c < cfg.num_chunks; c += warps)
    place_chunk<DeviceWarp>(staging + c * cfg.slot_bytes, meta[c], out + head + offsets[c]);
}

constexpr uint64_t kCrcPiece = 4096;

__global__ void crc_kernel(const uint8_t* __restrict__ out, EncodeStatus* st) {
  __shared__ uint32_t table[256];
  fill_crc_table(table);
  const Layout L = status_layout(st);
  const uint64_t len = meta_end(L) - L.header_bytes;
  const uint8_t* p = out + L.header_bytes;
  const uint64_t nthreads = uint64_t(gridDim.x) * blockDim.x;
  uint32_t acc = 0;
  for (uint64_t k = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; k * kCrcPiece < len; k += nthreads) {
    const uint64_t a = k * kCrcPiece, b = a + kCrcPiece < len ? a + kCrcPiece : len;
    acc ^= crc_shift(crc_update(0, p + a, b - a, table), len - b);
  }
  acc = __reduce_xor_sync(kFullMask, acc);
  if ((threadIdx.x & 31) == 0 && acc) atomicXor(&st->crc, acc);
}

__global__ void seal_kernel(uint8_t* out, const EncodeStatus* st) {
  __shared__ uint32_t table[256];
  fill_crc_table(table);
  if (threadIdx.x != 0) return;
  const Layout L = status_layout(st);
  st32(out + kOffMetaCrc, crc_finish(st->crc, meta_end(L) - L.header_bytes));
  st32(out + kOffHeaderCrc, 0);
  st32(out + kOffHeaderCrc, header_crc(out, uint32_t(L.header_bytes), table));
}

uint64_t align256(uint64_t x) { return (x + 255) & ~uint64_t(255); }

unsigned grid_for(uint64_t work, unsigned per_block, unsigned cap) {
  uint64_t g = (work + per_block - 1) / per_block;
  return unsigned(g < 1 ? 1 : (g > cap ? cap : g));
}

}  // namespace
}  // namespace gpu
}  // namespace nz

using namespace nz::gpu;

extern "C" int nzg_encode_plan(uint64_t numel, int ndim, int dtype, int keep, uint32_t block_size, uint32_t chunk_elems,
                               NzgEncodePlan* plan) {
  EncodeCfg cfg;
  if (!make_encode_cfg(numel, nullptr, ndim, dtype, keep, block_size, chunk_elems, cfg)) return -1;
  const uint64_t nb = block_size ? (numel + block_size - 1) / block_size : 0;
  uint64_t off = 0;
  plan->num_chunks = cfg.num_chunks;
  plan->slot_bytes = cfg.slot_bytes;
  plan->status_off = off, off = align256(off + kNzgStatusBytes);
  plan->norms_off = off, off = align256(off + 4 * nb);
  plan->meta_off = off, off = align256(off + sizeof(ChunkMeta) * cfg.num_chunks);
  plan->offsets_off = off, off = align256(off + 8 * (cfg.num_chunks + 1));
  plan->staging_off = off, off = align256(off + cfg.slot_bytes * cfg.num_chunks);
  plan->workspace_bytes = off;
  return 0;
}

// The configuration and workspace plan both encode phases start from; false for parameters the format cannot hold.
static bool configure(uint64_t numel, const int64_t* shape, int ndim, int dtype, int keep, uint32_t block_size,
                      uint32_t chunk_elems, EncodeCfg& cfg, NzgEncodePlan& plan) {
  return make_encode_cfg(numel, shape, ndim, dtype, keep, block_size, chunk_elems, cfg) &&
         nzg_encode_plan(numel, ndim, dtype, keep, block_size, chunk_elems, &plan) == 0;
}

extern "C" int nzg_encode_stage(const void* src, uint64_t numel, const int64_t* shape, int ndim, int dtype, int keep,
                                uint32_t block_size, uint32_t chunk_elems, void* workspace, void* stream) {
  EncodeCfg cfg;
  NzgEncodePlan plan;
  if (!configure(numel, shape, ndim, dtype, keep, block_size, chunk_elems, cfg, plan))
    return int(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  auto* ws = static_cast<uint8_t*>(workspace);
  auto* norms = reinterpret_cast<float*>(ws + plan.norms_off);
  auto* meta = reinterpret_cast<ChunkMeta*>(ws + plan.meta_off);
  const auto* in = static_cast<const uint8_t*>(src);
  if (block_size) {
    const uint64_t nb = (numel + block_size - 1) / block_size;
    norms_kernel<<<grid_for(nb, 8, 65535), 256, 0, s>>>(cfg, in, norms, nb);
  }
  if (cfg.num_chunks)
    chunks_kernel<<<grid_for(cfg.num_chunks, kEncodeWarps, 1u << 20), kEncodeWarps * 32, 0, s>>>(
        cfg, in, block_size ? norms : nullptr, ws + plan.staging_off, meta);
  scan_kernel<<<1, kScanThreads, 0, s>>>(cfg, meta, reinterpret_cast<uint64_t*>(ws + plan.offsets_off),
                                         reinterpret_cast<EncodeStatus*>(ws + plan.status_off));
  return int(cudaGetLastError());
}

extern "C" int nzg_encode_write(const void* src, uint64_t numel, const int64_t* shape, int ndim, int dtype, int keep,
                                uint32_t block_size, uint32_t chunk_elems, void* workspace, void* out,
                                uint64_t total_bytes, void* stream) {
  EncodeCfg cfg;
  NzgEncodePlan plan;
  if (!configure(numel, shape, ndim, dtype, keep, block_size, chunk_elems, cfg, plan))
    return int(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  auto* ws = static_cast<uint8_t*>(workspace);
  auto* st = reinterpret_cast<EncodeStatus*>(ws + plan.status_off);
  auto* o = static_cast<uint8_t*>(out);
  const uint64_t work = cfg.num_chunks * 32 > numel ? cfg.num_chunks * 32 : numel;
  write_kernel<<<grid_for(work, 256, 65535), 256, 0, s>>>(
      cfg, static_cast<const uint8_t*>(src), reinterpret_cast<const float*>(ws + plan.norms_off), ws + plan.staging_off,
      reinterpret_cast<const ChunkMeta*>(ws + plan.meta_off), reinterpret_cast<const uint64_t*>(ws + plan.offsets_off),
      st, o);
  crc_kernel<<<grid_for(total_bytes / kCrcPiece + 1, 256, 65535), 256, 0, s>>>(o, st);
  seal_kernel<<<1, 32, 0, s>>>(o, st);
  return int(cudaGetLastError());
}
