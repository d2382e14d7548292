// Batched decode: one launch for every chunk of every payload (e.g. all ranks' shards after an all-gather),
// one warp per work item (one chunk when the host's grain equals chunk_elems). Decode tables live in shared
// memory, renormalisation words are handed out in lane order with ballot + popc, the raw fields are merged in
// the same pass and final values are stored straight into the destinations: no intermediate buffer, no host
// synchronisation. The per-chunk code is chunk.h's, shared with the host tests.
#include <cuda_runtime.h>

#include "api.h"
#include "chunk.h"

namespace nz {
namespace gpu {
namespace {

constexpr int kCrcEntries = 256;

// Block shape per variant. v1, v2: NT tables per warp (NT = the batch's widest field count), 64 KiB of tables
// per block. v3: one table per warp plus a pool (kPool tables) that chunks coding more than one field borrow
// from; the pool word sits after the CRC table.
template <int NT, int V>
struct DecodeShape {
  static constexpr int kWarps = V == kV3 ? (NT <= 2 ? 8 : 6) : (NT <= 2 ? 4 : 2);
  static constexpr int kOwnTables = V == kV3 ? 1 : NT;
  static constexpr int kPool = V == kV3 ? (NT <= 2 ? 4 : 7) : 0;
  static constexpr int kHead = V == kV3 ? kCrcEntries + 4 : kCrcEntries;
  static constexpr size_t kSmem = sizeof(uint32_t) * (kHead + size_t(kWarps * kOwnTables + kPool) * kProbScale);
};

template <int NT, int V>
__global__ void __launch_bounds__(DecodeShape<NT, V>::kWarps * 32, 2)
    decode_kernel(const DecodeJob* __restrict__ jobs, int n_jobs, uint64_t total_items, int verify) {
  using S = DecodeShape<NT, V>;
  extern __shared__ uint32_t smem[];
  uint32_t* crc_table = smem;
  if (verify)
    for (int i = threadIdx.x; i < kCrcEntries; i += blockDim.x) crc_table[i] = crc_table_entry(uint32_t(i));
  if (V == kV3 && threadIdx.x == 0) smem[kCrcEntries] = 0;  // every pool table free
  __syncthreads();
  const int warp = int(threadIdx.x >> 5);
  const uint64_t item = uint64_t(blockIdx.x) * S::kWarps + warp;
  if (item >= total_items) return;
  int lo = 0, hi = n_jobs - 1;  // last job whose first item is <= item
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (jobs[mid].first_item <= item)
      lo = mid;
    else
      hi = mid - 1;
  }
  const DecodeJob job = jobs[lo];
  uint32_t* own = smem + S::kHead + size_t(warp) * S::kOwnTables * kProbScale;
  if constexpr (V == kV3) {
    PooledTables tables{own, smem + S::kHead + size_t(S::kWarps) * kProbScale, smem + kCrcEntries, S::kPool, 0};
    decode_item<DeviceWarp, NT, V>(job, item - job.first_item, tables, crc_table, verify != 0);
  } else {
    FixedTables tables{own};
    decode_item<DeviceWarp, NT, V>(job, item - job.first_item, tables, crc_table, verify != 0);
  }
}

template <int NT, int V>
cudaError_t launch(const DecodeJob* jobs, int n_jobs, uint64_t total_items, int verify, cudaStream_t stream) {
  using S = DecodeShape<NT, V>;
  // The > 48 KiB opt-in is per device: remember it per device id (a process may drive several GPUs).
  static bool opted_in[64] = {};
  int dev = 0;
  if (cudaError_t e = cudaGetDevice(&dev)) return e;
  if (dev < 0 || dev >= 64 || !opted_in[dev]) {
    cudaError_t e =
        cudaFuncSetAttribute(decode_kernel<NT, V>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(S::kSmem));
    if (e != cudaSuccess) return e;
    if (dev >= 0 && dev < 64) opted_in[dev] = true;
  }
  const uint64_t blocks = (total_items + S::kWarps - 1) / S::kWarps;
  if (blocks > 0x7FFFFFFFull) return cudaErrorInvalidValue;
  decode_kernel<NT, V><<<unsigned(blocks), S::kWarps * 32, S::kSmem, stream>>>(jobs, n_jobs, total_items, verify);
  return cudaGetLastError();
}

template <int V>
cudaError_t launch_variant(const DecodeJob* jobs, int n_jobs, uint64_t total_items, int max_fields, int verify,
                           cudaStream_t s) {
  return max_fields <= 2 ? launch<2, V>(jobs, n_jobs, total_items, verify, s)
                         : launch<4, V>(jobs, n_jobs, total_items, verify, s);
}

constexpr const char* kVariantNames[] = {"v1", "v2", "v3"};  // index = variant argument; chunk.h's Variant - 1

}  // namespace
}  // namespace gpu
}  // namespace nz

extern "C" int nzg_decode_variant_count() { return int(sizeof(nz::gpu::kVariantNames) / sizeof(char*)); }

extern "C" const char* nzg_decode_variant_name(int variant) {
  return variant >= 0 && variant < nzg_decode_variant_count() ? nz::gpu::kVariantNames[variant] : "";
}

extern "C" int nzg_decode_batch(const void* jobs_dev, int n_jobs, uint64_t total_items, int max_fields, int verify,
                                void* stream, int variant) {
  using namespace nz::gpu;
  if (variant < 0 || variant >= nzg_decode_variant_count()) return int(cudaErrorInvalidValue);
  if (n_jobs <= 0 || total_items == 0) return 0;
  const auto* jobs = static_cast<const DecodeJob*>(jobs_dev);
  auto s = static_cast<cudaStream_t>(stream);
  switch (variant) {
    case 1:
      return int(launch_variant<kV2>(jobs, n_jobs, total_items, max_fields, verify, s));
    case 2:
      return int(launch_variant<kV3>(jobs, n_jobs, total_items, max_fields, verify, s));
    default:
      return int(launch_variant<kV1>(jobs, n_jobs, total_items, max_fields, verify, s));
  }
}

extern "C" const char* nzg_error_string(int code) { return cudaGetErrorString(cudaError_t(code)); }

extern "C" const char* nzg_error_name(int code) { return cudaGetErrorName(cudaError_t(code)); }

extern "C" int nzg_device_count(int* count) {
  *count = 0;
  const cudaError_t e = cudaGetDeviceCount(count);
  if (e != cudaSuccess) *count = 0;  // the runtime may leave garbage on failure
  return int(e);
}
