// The format's rules, written once for the CPU and CUDA codecs: what makes a header valid, which chunk sizes
// exist, and when a field or a whole payload is stored raw. csrc/cpu/decode.cpp turns a failed check into its
// FormatError message, the CUDA kernels (csrc/cuda/chunk.h) into an error bit; the encoders use the same
// predicates, so an encoder can never write what a decoder refuses. Host/device (NZ_HD), like format.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "format.h"

namespace nz {

// ---- little-endian loads. Payloads start 16-byte aligned on the device (the Python glue guarantees it) and
// every multi-byte field sits at a multiple of its size inside them, so the device uses plain aligned accesses;
// the host reads any alignment.
template <class T>
NZ_HD T load_le(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const T*>(p);
#else
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
#endif
}
NZ_HD uint16_t ld16(const uint8_t* p) { return load_le<uint16_t>(p); }
NZ_HD uint32_t ld32(const uint8_t* p) { return load_le<uint32_t>(p); }
NZ_HD uint64_t ld64(const uint8_t* p) { return load_le<uint64_t>(p); }

// Doubles without FMA contraction: the CPU build (-std=c++17, ISO mode) rounds every operation separately,
// and the raw-vs-coded decision must come out the same on both.
NZ_HD double dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
NZ_HD double dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
NZ_HD double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// ---- chunk sizes and sizes of layouts ----------------------------------------------------------------------
constexpr uint32_t kMinChunkElems = 1024, kMaxChunkElems = 1u << 24;

// Chunk sizes the format holds: a multiple of the lane count (every step but the last is full) in 1 Ki..16 Mi.
NZ_HD bool chunk_elems_ok(uint64_t chunk_elems) {
  return chunk_elems >= kMinChunkElems && chunk_elems <= kMaxChunkElems && chunk_elems % kLanes == 0;
}

NZ_HD uint64_t header_bytes_for(uint64_t ndim) { return align_up(kHeaderFixedBytes + 8 * ndim); }
NZ_HD uint64_t raw_payload_bytes(uint64_t header_bytes, uint64_t numel, uint64_t elem_bytes) {
  return align_up(header_bytes + numel * elem_bytes);
}

// ---- raw vs coded (the encoders' choices; the CPU's encode.cpp was their definition) ----------------------------
// Bits a coded field pays besides its words: field header, frequency table, worst-case alignment padding.
NZ_HD double coded_overhead_bits(uint32_t n_used) {
  return 8.0 * double(kFieldHeaderBytes + kTableEntryBytes * n_used + 2 * kAlign);
}
// A field of n elements is entropy-coded only where its estimate saves >= 1% over raw_bytes: a field that barely
// compresses (fp32 low mantissa bytes) decodes several times faster raw.
NZ_HD bool field_worth_coding(uint64_t n, double entropy_bits, uint32_t n_used, uint64_t raw_bytes) {
  return n > 0 && dadd(entropy_bits, coded_overhead_bits(n_used)) < dmul(0.99, double(raw_bytes) * 8);
}
// Bytes a coded field takes (header, table, words); once its words are known it is kept only if smaller than raw.
NZ_HD uint64_t coded_field_bytes(uint32_t n_used, uint64_t n_words) {
  return kFieldHeaderBytes + align_up(uint64_t(kTableEntryBytes) * n_used) + align_up(2 * n_words);
}
// A lossless payload whose raw layout is no larger than its coded one is stored raw (incompressible or tiny).
NZ_HD bool payload_stored_raw(bool lossless, uint64_t raw_total, uint64_t coded_total) {
  return lossless && raw_total <= coded_total;
}

// ---- header ----------------------------------------------------------------------------------------------------
struct HeaderFields {
  uint8_t dtype, mode, keep_bits, flags;
  int ndim;
  uint32_t header_bytes, chunk_elems, num_chunks, block_size;
  uint64_t numel, total_bytes;
};

// What check_header_* found wrong, in the order they check. The CPU decoder words each one (decode.cpp,
// header_error); the GPU reports any of them as kErrHeader.
enum HeaderCheck : int {
  kHeaderOk = 0,
  kHeaderTruncated,  // shorter than the fixed header
  kHeaderBadMagic,
  kHeaderBadVersion,
  kHeaderBadNdim,
  kHeaderBadSize,  // header_bytes disagrees with ndim
  kHeaderTruncatedInside,
  kHeaderBadDtype,
  kHeaderBadKeepBits,
  kHeaderBadFlags,
  kHeaderLossyParams,  // lossless flagged payload with kept bits < full or normalisation
  kHeaderBlockFlag,    // block size and normalisation flag disagree
  kHeaderNegativeDim,
  kHeaderAbsurdShape,  // element count over 2^62
  kHeaderShapeNumel,
  kHeaderTotalTooSmall,
  kHeaderTruncatedPayload,  // fewer bytes than total_bytes
  kHeaderRawParams,         // raw payload with coded parameters
  kHeaderRawSize,
  kHeaderProbBits,
  kHeaderChunkElems,
  kHeaderChunkCount,
  kHeaderBadMode,
};

// First stage: the fixed part and the header's own size, everything the header CRC needs (the CPU checks that
// CRC between the stages; the GPU only when verifying). Fills ndim and header_bytes.
NZ_HD HeaderCheck check_header_extent(const uint8_t* s, uint64_t len, HeaderFields& h) {
  if (len < kHeaderFixedBytes) return kHeaderTruncated;
  if (ld32(s + kOffMagic) != kMagic) return kHeaderBadMagic;
  if (ld16(s + kOffVersion) != kVersion) return kHeaderBadVersion;
  h.ndim = s[kOffNdim];
  if (h.ndim > int(kMaxNdim)) return kHeaderBadNdim;
  h.header_bytes = ld16(s + kOffHeaderBytes);
  if (h.header_bytes != header_bytes_for(uint64_t(h.ndim))) return kHeaderBadSize;
  if (len < h.header_bytes) return kHeaderTruncatedInside;
  return kHeaderOk;
}

// Second stage: every field and their consistency with each other and with len. shape (may be null): receives
// the ndim dimensions.
NZ_HD HeaderCheck check_header_fields(const uint8_t* s, uint64_t len, HeaderFields& h, int64_t* shape) {
  h.dtype = s[kOffDtype];
  h.mode = s[kOffMode];
  h.keep_bits = s[kOffKeepBits];
  h.flags = s[kOffFlags];
  h.numel = ld64(s + kOffNumel);
  h.chunk_elems = ld32(s + kOffChunkElems);
  h.num_chunks = ld32(s + kOffNumChunks);
  h.block_size = ld32(s + kOffBlockSize);
  h.total_bytes = ld64(s + kOffTotalBytes);
  const DTypeInfo d = dtype_info(h.dtype);
  if (d.bits == 0) return kHeaderBadDtype;
  if (h.keep_bits > d.mant_bits) return kHeaderBadKeepBits;
  if (h.flags & ~uint32_t(kFlagNormalized | kFlagLossy)) return kHeaderBadFlags;
  if (!(h.flags & kFlagLossy) && (h.keep_bits != d.mant_bits || (h.flags & kFlagNormalized))) return kHeaderLossyParams;
  if (bool(h.flags & kFlagNormalized) != (h.block_size != 0)) return kHeaderBlockFlag;
  uint64_t prod = 1;
  for (int i = 0; i < h.ndim; i++) {
    const uint64_t dim = ld64(s + kOffShape + 8 * i);
    if (dim >> 63) return kHeaderNegativeDim;
    if (dim && prod > (uint64_t(1) << 62) / dim) return kHeaderAbsurdShape;  // prod * dim > 2^62
    prod *= dim;
    if (shape) shape[i] = int64_t(dim);
  }
  if (prod != h.numel) return kHeaderShapeNumel;
  if (h.total_bytes < h.header_bytes) return kHeaderTotalTooSmall;
  if (len < h.total_bytes) return kHeaderTruncatedPayload;
  const uint64_t eb = uint64_t(d.bits / 8);
  if (h.mode == kModeRaw) {
    if (h.flags || h.num_chunks || h.chunk_elems) return kHeaderRawParams;
    if (h.numel > (h.total_bytes - h.header_bytes) / eb ||
        h.total_bytes != raw_payload_bytes(h.header_bytes, h.numel, eb))
      return kHeaderRawSize;
  } else if (h.mode == kModeCoded) {
    if (s[kOffProbBits] != kProbBits) return kHeaderProbBits;
    if (!chunk_elems_ok(h.chunk_elems)) return kHeaderChunkElems;
    if (h.num_chunks != (h.numel + h.chunk_elems - 1) / h.chunk_elems) return kHeaderChunkCount;
  } else {
    return kHeaderBadMode;
  }
  return kHeaderOk;
}

// ---- sections of a coded payload ---------------------------------------------------------------------------------
// Where the sections after a coded payload's header sit: block normalisers (when normalised), the chunk index
// (num_chunks + 1 u64 offsets), then the chunks.
struct Sections {
  uint64_t nblocks;    // block normalisers (0 when not normalised)
  uint64_t norms_off;  // valid when normalised
  uint64_t index_off;
  uint64_t chunks_off;  // end of the index: the first chunk's offset
};
enum SectionCheck : int { kSectionsOk = 0, kSectionNorms, kSectionIndex };  // which section runs past the end

// For a header that passed check_header_fields with mode kModeCoded.
NZ_HD SectionCheck check_sections(const HeaderFields& h, Sections& sec) {
  uint64_t off = h.header_bytes;
  sec.nblocks = 0;
  sec.norms_off = 0;
  if (h.flags & kFlagNormalized) {
    sec.nblocks = (h.numel + h.block_size - 1) / h.block_size;
    if (sec.nblocks > (h.total_bytes - off) / 4) return kSectionNorms;
    sec.norms_off = off;
    off += align_up(4 * sec.nblocks);
  }
  if (off > h.total_bytes || uint64_t(h.num_chunks) + 1 > (h.total_bytes - off) / 8) return kSectionIndex;
  sec.index_off = off;
  off += align_up(8 * (uint64_t(h.num_chunks) + 1));
  if (off > h.total_bytes) return kSectionIndex;
  sec.chunks_off = off;
  return kSectionsOk;
}

// ---- the GPU's error bits, OR-ed into a payload's device error word (nonzero = the payload is not what it claims
// to be). Here rather than in csrc/cuda so that nzdist._C, always built, can name them to Python.
enum Err : uint32_t {
  kErrHeader = 1,       // header malformed (magic, version, sizes, flags, shape)
  kErrMismatch = 2,     // header's dtype / numel differ from what the caller said the payload holds
  kErrIndex = 4,        // normaliser section or chunk index out of bounds / inconsistent
  kErrChunk = 8,        // chunk header or layout inconsistent
  kErrTable = 16,       // bad frequency table
  kErrStream = 32,      // entropy-coded stream does not end where it should (corrupted words or states)
  kErrNorm = 64,        // block normaliser outside [1, 2)
  kErrCrc = 128,        // checksum mismatch (only checked when verifying)
  kErrNanLossy = 256,   // encode: NaN input with Lossy(mantissa_bits=0)
  kErrSlot = 512,       // all-gather slot header malformed (magic, kind, length beyond the slot)
  kErrOverflow = 1024,  // slot marked overflow although the host expected data (ranks disagree on who spilled)
};

// ---- all-gather slots ------------------------------------------------------------------------------------------
// nzdist.fsdp all-gathers one fixed-capacity slot per rank (FSDP2 needs equal sizes). A slot is a 16-byte header,
// then data, then padding up to the capacity:
//   offset 0  u32 magic "NZS1"   offset 4  u8 kind (SlotKind)   offset 5  3 zero bytes
//   offset 8  u64 length: bytes of data that follow (overflow: the payload bytes the rank needed)
// kind payload: an nzdist payload; raw: the elements, little-endian; overflow: no data (the owner sends the shard
// another way, agreed by the ranks beforehand). The decoders parse slots themselves, so the host reads nothing.
constexpr uint32_t kSlotMagic = 0x31535A4Eu;  // "NZS1"
constexpr uint64_t kSlotHeaderBytes = 16;
enum SlotKind : uint8_t { kSlotPayload = 0, kSlotRaw = 1, kSlotOverflow = 2 };

struct SlotView {
  uint8_t kind;
  uint64_t len;  // data bytes after the header
};

// Checks the slot at s (cap readable bytes) that should hold raw_bytes of elements: kErrSlot for a header nzdist
// does not write or a length beyond the slot, kErrMismatch for raw data of the wrong size, kErrOverflow for an
// overflow mark (the caller leaves out the slots it knows to be spilled). 0 = the data may be read.
NZ_HD uint32_t check_slot(const uint8_t* s, uint64_t cap, uint64_t raw_bytes, SlotView& v) {
  if (cap < kSlotHeaderBytes || ld32(s) != kSlotMagic || s[5] || s[6] || s[7]) return kErrSlot;
  v.kind = s[4];
  v.len = ld64(s + 8);
  if (v.kind == kSlotOverflow) return kErrOverflow;
  if (v.kind != kSlotPayload && v.kind != kSlotRaw) return kErrSlot;
  if (v.len > cap - kSlotHeaderBytes) return kErrSlot;
  if (v.kind == kSlotRaw && v.len != raw_bytes) return kErrMismatch;
  return 0;
}

}  // namespace nz
