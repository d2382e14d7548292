// CPU encoder and decoder of the nzdist format (csrc/FORMAT.md). Pointers and sizes in, no torch types, so the
// extension does not depend on torch's ABI.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../format.h"
#include "../cuda/records.h"
#include "../validate.h"

namespace nz {

// Malformed, truncated or corrupted payload. Mapped to nzdist.FormatError in Python.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct EncodeParams {
  uint8_t dtype = kBF16;
  int keep_bits = -1;       // mantissa bits kept; -1 or the dtype's full width = lossless
  uint32_t block_size = 0;  // lossy block normalisation; 0 = off
  uint32_t chunk_elems = 1u << 16;
};

// Result of encoding: chunk bodies are built in parallel, then written out once the caller has allocated the
// exact number of bytes (two phases, so the payload lands in a torch-owned buffer without a second copy).
class Encoded {
 public:
  uint64_t nbytes() const { return total_bytes_; }
  void write(uint8_t* dst, int threads) const;

  struct Chunk {  // one chunk's bytes (uninitialised storage: the encoder writes every byte, padding included)
    std::unique_ptr<uint8_t[]> data;
    uint64_t size = 0;
  };

 private:
  friend std::unique_ptr<Encoded> encode(const void*, uint64_t, const int64_t*, int, const EncodeParams&, int);
  std::vector<uint8_t> head_;         // header + normalisers + chunk index (raw mode: header only)
  std::vector<Chunk> chunks_;         // coded mode
  const uint8_t* raw_src_ = nullptr;  // raw mode: the caller's tensor, copied by write()
  uint64_t raw_bytes_ = 0;
  uint64_t total_bytes_ = 0;
};

std::unique_ptr<Encoded> encode(const void* src, uint64_t numel, const int64_t* shape, int ndim,
                                const EncodeParams& params, int threads);

struct HeaderInfo : HeaderFields {  // validate.h's fields, and the shape
  int64_t shape[kMaxNdim];
};

// Validates the header (magic, version, checksum, consistency); throws FormatError.
HeaderInfo parse_header(const uint8_t* src, uint64_t len);

// Decodes one payload into dst (dst_bytes must be numel * element size). Everything read is bounds-checked and
// checksummed before use; throws FormatError.
void decode(const uint8_t* src, uint64_t len, void* dst, uint64_t dst_bytes, int threads);

struct DecodeJob {
  const uint8_t* src;
  uint64_t len;
  void* dst;
  uint64_t dst_bytes;
};
// All chunks of all payloads in one parallel pass (e.g. every rank's shard after an all-gather).
void decode_batch(const std::vector<DecodeJob>& jobs, int threads);

// The GPU decoder's job records (csrc/cuda/records.h) with host addresses, slots included: nothing throws; what is
// wrong with a job is OR-ed into its error word as the GPU's Err bits (validate.h), and the other jobs decode.
void decode_jobs(const gpu::DecodeJob* jobs, uint64_t n_jobs, int threads);

// Chunk decoders: the scalar reference and the SIMD ones this build has; "auto" picks the fastest. For tests and
// benchmarks: every decoder must give the same results.
enum class Decoder { kAuto, kScalar, kAvx2, kAvx512 };
std::vector<std::string> available_decoders();
void set_decoder(const std::string& name);

// Chunk encoders (the kernels that entropy-code and pack the fields): the scalar reference and the SIMD ones
// this build has; "auto" picks the fastest. For tests and benchmarks: every encoder writes the same bytes.
std::vector<std::string> available_encoders();
void set_encoder(const std::string& name);
uint64_t encoder_self_check();  // SIMD arithmetic against its scalar definition, for tests: 0 = no mismatch

// Largest payload encode() can produce for this many elements (the raw fallback bounds it when lossless).
uint64_t max_encoded_bytes(uint64_t numel, int ndim, const EncodeParams& params);

}  // namespace nz
