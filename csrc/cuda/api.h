// C API of the CUDA codec (decode.cu, encode.cu): device addresses and a cudaStream_t passed as void*, plain
// integers otherwise, so the Python binding (bindings.cpp) needs neither CUDA nor torch headers.
// Every call only enqueues work on `stream` and returns a cudaError_t code (0 = launched); nothing synchronises.
#pragma once

#include <cstdint>

extern "C" {

// Decode a batch: jobs_dev holds n_jobs nz::gpu::DecodeJob records (records.h; 64 bytes each) in device memory,
// total_items = sum of job_items(numel, grain). max_fields = largest field count of the batch's dtypes
// (bf16/fp16: 2, fp32: 4). verify != 0 also checks every CRC (slower). Errors go to each job's error word.
// variant: which decode kernel (0 .. nzg_decode_variant_count() - 1; csrc/cuda/NOTES.md), all bit-exact.
int nzg_decode_batch(const void* jobs_dev, int n_jobs, uint64_t total_items, int max_fields, int verify, void* stream,
                     int variant);
int nzg_decode_variant_count();
const char* nzg_decode_variant_name(int variant);

// Encode, in two calls around one host read of the status block (the payload's size decides its allocation).
// Workspace layout (offsets in bytes from the workspace start, all 256-aligned):
struct NzgEncodePlan {
  uint64_t num_chunks, slot_bytes;
  uint64_t norms_off, meta_off, offsets_off, status_off, staging_off, workspace_bytes;
};
// Status block at status_off (device, filled by nzg_encode_stage): nz::gpu::EncodeStatus (records.h).
constexpr int kNzgStatusBytes = 48;

// Returns 0, or -1 for parameters the CPU encoder would also reject.
int nzg_encode_plan(uint64_t numel, int ndim, int dtype, int keep_bits, uint32_t block_size, uint32_t chunk_elems,
                    NzgEncodePlan* plan);
// Normalisers, chunk encoding into staging, layout. src: numel contiguous elements (device).
int nzg_encode_stage(const void* src, uint64_t numel, const int64_t* shape, int ndim, int dtype, int keep_bits,
                     uint32_t block_size, uint32_t chunk_elems, void* workspace, void* stream);
// Header, normalisers, index, compaction (or raw copy), checksums into out (total_bytes from the status block).
int nzg_encode_write(const void* src, uint64_t numel, const int64_t* shape, int ndim, int dtype, int keep_bits,
                     uint32_t block_size, uint32_t chunk_elems, void* workspace, void* out, uint64_t total_bytes,
                     void* stream);

const char* nzg_error_string(int code);  // cudaGetErrorString / cudaGetErrorName of a returned code
const char* nzg_error_name(int code);
// cudaGetDeviceCount: *count devices, or the runtime's reason there are none (no driver, driver too old, no
// device, ...) as the returned code; the caller reports that reason instead of "0 devices".
int nzg_device_count(int* count);
}
