// The records the host and the CUDA kernels exchange through device memory: a batched decode's job table and the
// encoder's status block. Python builds and reads them from the layouts nzdist._C exposes (DECODE_JOB,
// ENCODE_STATUS: field -> (byte offset, bytes)), so this header is their only definition. No CUDA headers:
// nzdist._C, built without CUDA, includes it.
#pragma once

#include <cstdint>

namespace nz {
namespace gpu {

// One payload (or all-gather slot) of a batch, as the host describes it (64 bytes). The CPU codec reads the same
// records with host addresses (nzdist._C.decode_jobs), so the host glue is one for both. The host knows numel and dtype
// of every destination; the payload must agree or the item reports kErrMismatch. Work item i of a payload covers
// elements [i*grain, (i+1)*grain): it decodes the chunks that start in that range (grain = the payload's chunk_elems
// gives one chunk per item; any grain is correct, a wrong guess only costs speed).
struct DecodeJob {
  uint64_t src;      // payload (device address, 16-byte aligned)
  uint64_t src_len;  // bytes readable at src (payloads may be followed by padding or the next payload)
  uint64_t dst;      // destination elements (device address, element-aligned, contiguous)
  uint64_t numel;
  uint64_t first_item;  // prefix sum of work items over the batch
  uint32_t grain;       // elements per work item
  uint32_t dtype;       // nz::DType code the destination holds
  uint64_t err;         // uint32 error word (device address), OR-ed with Err bits (validate.h); 0 = none
  uint32_t flags;       // kJobSlot: src is an all-gather slot (validate.h), parsed before its payload
  uint32_t reserved;
};
constexpr uint32_t kJobSlot = 1;
static_assert(sizeof(DecodeJob) == 64, "DecodeJob: 8 u64 per payload");

// Written by the encode stage for the host's one read (api.h: nzg_encode_stage).
struct EncodeStatus {
  uint64_t total, header_bytes, norm_bytes, index_bytes;
  uint32_t mode, err, crc, pad;
};
static_assert(sizeof(EncodeStatus) == 48, "EncodeStatus: the status block");

}  // namespace gpu
}  // namespace nz
