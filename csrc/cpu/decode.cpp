// CPU decoder. Every offset, count and table is validated against the payload's bounds and checksums before it
// is used, so a corrupted payload raises FormatError and never reads or writes out of bounds.
#include <algorithm>
#include <cstring>
#include <string>

#include "bytes.h"
#include "chunk_view.h"
#include "codec.h"
#include "crc32c.h"
#include "parallel.h"

namespace nz {
namespace {

// Which chunk decoder runs: the best this build has, unless a test asks for another (set_decoder).
Decoder g_decoder = Decoder::kAuto;

[[noreturn]] void fail(const std::string& what) { throw FormatError("nzdist payload: " + what); }

struct Prepared {
  HeaderInfo h;
  const uint8_t* src;
  const uint8_t* index;  // (num_chunks + 1) u64 offsets, validated
  const uint8_t* norms;  // per-block f32 normalisers or null, validated
  uint8_t* dst;
};

Prepared prepare(const uint8_t* src, uint64_t len, void* dst, uint64_t dst_bytes) {
  Prepared p{parse_header(src, len), src, nullptr, nullptr, static_cast<uint8_t*>(dst)};
  const HeaderInfo& h = p.h;
  const DTypeInfo d = dtype_info(h.dtype);
  if (dst_bytes != h.numel * (d.bits / 8))
    throw std::invalid_argument("nzdist: output buffer has " + std::to_string(dst_bytes) +
                                " bytes, the payload holds " + std::to_string(h.numel * (d.bits / 8)));
  if (h.mode == kModeRaw) {
    if (crc32c(src + h.header_bytes, h.total_bytes - h.header_bytes) != get_u32(src, kOffMetaCrc))
      fail("checksum mismatch in raw data");
    return p;
  }
  Sections sec;
  switch (check_sections(h, sec)) {
    case kSectionNorms:
      fail("normaliser section runs past the end");
    case kSectionIndex:
      fail("chunk index runs past the end");
    case kSectionsOk:
      break;
  }
  if (h.flags & kFlagNormalized) p.norms = src + sec.norms_off;
  p.index = src + sec.index_off;
  const uint64_t off = sec.chunks_off;
  if (crc32c(src + h.header_bytes, off - h.header_bytes) != get_u32(src, kOffMetaCrc))
    fail("checksum mismatch in normalisers or chunk index");
  uint64_t prev = off;
  if (get_u64(p.index, 0) != off) fail("first chunk offset is wrong");
  for (uint64_t c = 1; c <= h.num_chunks; c++) {
    uint64_t o = get_u64(p.index, 8 * c);
    if (o < prev + kChunkHeaderBytes || o % kAlign || o > h.total_bytes) fail("chunk index is inconsistent");
    prev = o;
  }
  if (prev != h.total_bytes) fail("chunk index does not end at the payload's end");
  if (p.norms) {
    for (uint64_t b = 0; b < sec.nblocks; b++) {
      float s = bits_f32(get_u32(p.norms, 4 * b));
      if (!(s >= 1.f && s < 2.f)) fail("block normaliser out of range");
    }
  }
  return p;
}

// Per-thread buffers for one open chunk (decode tables, scratch for the scalar and normalised paths).
struct Scratch {
  std::vector<uint32_t> q, u;
  std::vector<uint32_t> table[kMaxFields];
};

struct OpenChunk {
  ChunkView view;
  DecodeTarget target;
  uint64_t begin;  // first element
};

void build_table(const uint8_t* entries, int n_used, int width, uint32_t* table) {
  uint32_t cum = 0;
  int prev = -1;
  for (int i = 0; i < n_used; i++) {
    uint32_t e = uint32_t(entries[3 * i]) | uint32_t(entries[3 * i + 1]) << 8 | uint32_t(entries[3 * i + 2]) << 16;
    int sym = int(e & 0x3FF);
    uint32_t freq = ((e >> 10) & 0x7FF) + 1;
    if ((e >> 21) || sym <= prev || sym >= (1 << width) || cum + freq > kProbScale) fail("bad frequency table");
    for (uint32_t s = 0; s < freq; s++) table[cum + s] = pack_decode_entry(uint32_t(sym), freq, s);
    cum += freq;
    prev = sym;
  }
  if (cum != kProbScale) fail("frequencies do not sum to 2^11");
}

// Validate chunk c (checksum, counts, layout, tables) and describe it for the decoders.
OpenChunk open_chunk(const Prepared& p, uint64_t c, Scratch& scratch) {
  const HeaderInfo& h = p.h;
  const DTypeInfo d = dtype_info(h.dtype);
  const FieldLayout fl = field_layout(h.dtype, h.keep_bits);
  const uint64_t begin = c * h.chunk_elems;
  const uint64_t n = std::min<uint64_t>(h.chunk_elems, h.numel - begin);
  const uint64_t n_pad = (n + kLanes - 1) / kLanes * kLanes;
  const uint64_t start = get_u64(p.index, 8 * c), size = get_u64(p.index, 8 * (c + 1)) - start;
  const uint8_t* ch = p.src + start;
  if (crc32c(ch + 4, size - 4) != get_u32(ch, kChunkOffCrc)) fail("checksum mismatch in chunk " + std::to_string(c));
  if (get_u32(ch, kChunkOffElems) != n) fail("chunk " + std::to_string(c) + " has the wrong element count");
  const uint8_t mask = ch[kChunkOffCodedMask];
  if (mask >> fl.n) fail("chunk " + std::to_string(c) + " codes a field that does not exist");

  // Walk the layout: coded field headers+tables, raw fields, word streams; all must fit exactly.
  uint64_t off = kChunkHeaderBytes;
  const uint8_t* fhead[kMaxFields] = {};
  const uint8_t* fdata[kMaxFields] = {};
  uint64_t n_words[kMaxFields] = {};
  for (int f = 0; f < fl.n; f++) {
    if (!(mask >> f & 1)) continue;
    if (off + kFieldHeaderBytes > size) fail("chunk field header runs past the chunk");
    fhead[f] = ch + off;
    int n_used = get_u16(ch, off);
    n_words[f] = get_u32(ch, off + 4);
    if (n_used == 0 || n_used > (1 << fl.width[f])) fail("bad symbol count");
    uint64_t table_end = off + kFieldHeaderBytes + uint64_t(kTableEntryBytes) * n_used;
    if (table_end > size) fail("frequency table runs past the chunk");
    scratch.table[f].resize(kProbScale);
    build_table(ch + off + kFieldHeaderBytes, n_used, fl.width[f], scratch.table[f].data());
    off = align_up(table_end);
  }
  for (int f = 0; f < fl.n; f++) {
    if (mask >> f & 1) continue;
    fdata[f] = ch + off;
    off += align_up(raw_field_bytes(fl.width[f], n_pad));
    if (off > size) fail("raw field runs past the chunk");
  }
  for (int f = 0; f < fl.n; f++) {
    if (!(mask >> f & 1)) continue;
    if (n_words[f] > size / 2) fail("word stream runs past the chunk");
    fdata[f] = ch + off;
    off += align_up(2 * n_words[f]);
    if (off > size) fail("word stream runs past the chunk");
  }
  if (off != size) fail("chunk " + std::to_string(c) + " size does not match its layout");

  ChunkView view{n, n_pad, fl.n, {}};
  for (int f = 0; f < fl.n; f++) {
    bool coded = mask >> f & 1;
    view.field[f] = {
        coded,    fl.width[f], fl.shift[f], coded ? scratch.table[f].data() : nullptr, coded ? fhead[f] + 8 : nullptr,
        fdata[f], n_words[f]};
  }
  const int drop = d.mant_bits - h.keep_bits;
  const int bytes = d.bits / 8;
  const bool normalised = h.flags & kFlagNormalized;
  // Normalised payloads decode to u32 bit patterns first, then divide out the block normalisers.
  if (normalised) scratch.u.resize(n_pad);
  DecodeTarget target{normalised ? reinterpret_cast<uint8_t*>(scratch.u.data()) : p.dst + begin * bytes,
                      normalised ? 4 : bytes, drop};
  return {view, target, begin};
}

// Where chunk c of a prepared payload lies (the index was validated by prepare).
std::pair<const uint8_t*, uint64_t> chunk_bytes(const Prepared& p, uint64_t c) {
  const uint64_t start = get_u64(p.index, 8 * c);
  return {p.src + start, get_u64(p.index, 8 * (c + 1)) - start};
}

// Block-normalised payloads: multiply the normalisers back in (f32), round into the dtype.
void finish_chunk(const Prepared& p, const OpenChunk& oc, const Scratch& scratch) {
  const HeaderInfo& h = p.h;
  if (!(h.flags & kFlagNormalized)) return;
  const DTypeInfo d = dtype_info(h.dtype);
  const uint32_t inf = exp_all_ones(d);
  const int bytes = d.bits / 8;
  uint8_t* out = p.dst + oc.begin * bytes;
  for (uint64_t i = 0; i < oc.view.n; i++) {
    uint32_t u = scratch.u[i];
    if ((u & inf) != inf) {
      float s = bits_f32(get_u32(p.norms, 4 * ((oc.begin + i) / h.block_size)));
      u = float_to_dtype(dtype_to_float(u, h.dtype) * s, h.dtype);
    }
    std::memcpy(out + bytes * i, &u, bytes);
  }
}

void decode_prepared(const std::vector<Prepared>& jobs, int threads) {
  std::vector<std::pair<uint32_t, uint64_t>> work;  // (job, chunk)
  for (uint32_t j = 0; j < jobs.size(); j++) {
    const Prepared& p = jobs[j];
    if (p.h.mode == kModeRaw) {
      std::memcpy(p.dst, p.src + p.h.header_bytes, p.h.numel * (dtype_info(p.h.dtype).bits / 8));
      continue;
    }
    for (uint64_t c = 0; c < p.h.num_chunks; c++) work.emplace_back(j, c);
  }
  // Chunks go in pairs: the SIMD decoder interleaves two chunks' independent rANS chains, which nearly
  // doubles its throughput (one chunk's 4 vectors of lanes cannot hide the gather-multiply-load latency).
  Decoder which = g_decoder;
  if (which == Decoder::kAuto)
    which = avx512::available() ? Decoder::kAvx512 : avx2::available() ? Decoder::kAvx2 : Decoder::kScalar;
  const bool simd = which != Decoder::kScalar;
  const uint64_t group = simd ? 2 : 1;
  parallel_for((work.size() + group - 1) / group, threads, [&](uint64_t i) {
    thread_local Scratch scratch[2];
    const uint64_t first = i * group, count = std::min<uint64_t>(group, work.size() - first);
    OpenChunk oc[2];
    for (uint64_t k = 0; k < count; k++)
      oc[k] = open_chunk(jobs[work[first + k].first], work[first + k].second, scratch[k]);
    // Threads take items in increasing order, so the next item is what this thread (or one sharing its L3)
    // opens next: its chunks are prefetched while this one decodes.
    const uint64_t next = first + group;
    if (next < work.size()) {
      auto [lo, len] = chunk_bytes(jobs[work[next].first], work[next].second);
      const uint64_t last = std::min<uint64_t>(next + group, work.size()) - 1;
      if (last != next && work[last].first == work[next].first)  // consecutive chunks of a payload are adjacent
        len += chunk_bytes(jobs[work[last].first], work[last].second).second;
      oc[0].view.ahead = lo;
      oc[0].view.ahead_bytes = len;
    }
    if (!simd) {
      scratch[0].q.resize(oc[0].view.n_pad);
      decode_chunk_scalar(oc[0].view, oc[0].target, scratch[0].q.data());
    } else if (which == Decoder::kAvx512) {
      if (count == 2)
        avx512::decode_pair(oc[0].view, oc[0].target, oc[1].view, oc[1].target);
      else
        avx512::decode_one(oc[0].view, oc[0].target);
    } else {
      if (count == 2)
        avx2::decode_pair(oc[0].view, oc[0].target, oc[1].view, oc[1].target);
      else
        avx2::decode_one(oc[0].view, oc[0].target);
    }
    for (uint64_t k = 0; k < count; k++) finish_chunk(jobs[work[first + k].first], oc[k], scratch[k]);
  });
}

// The FormatError message of a failed header check (validate.h; the GPU reports them all as kErrHeader).
[[noreturn]] void header_error(HeaderCheck c, const uint8_t* src, uint64_t len, const HeaderFields& h) {
  switch (c) {
    case kHeaderTruncated:
      fail("truncated: " + std::to_string(len) + " bytes, the header alone needs " + std::to_string(kHeaderFixedBytes));
    case kHeaderBadMagic:
      fail("bad magic, not an nzdist payload");
    case kHeaderBadVersion:
      fail("unsupported format version " + std::to_string(get_u16(src, kOffVersion)) + " (this build reads " +
           std::to_string(kVersion) + ")");
    case kHeaderBadNdim:
      fail("ndim " + std::to_string(h.ndim) + " exceeds 16");
    case kHeaderBadSize:
      fail("header size is inconsistent");
    case kHeaderTruncatedInside:
      fail("truncated inside the header");
    case kHeaderBadDtype:
      fail("unknown dtype code " + std::to_string(h.dtype));
    case kHeaderBadKeepBits:
      fail("kept mantissa bits exceed the dtype's");
    case kHeaderBadFlags:
      fail("unknown flags");
    case kHeaderLossyParams:
      fail("lossless payload with lossy parameters");
    case kHeaderBlockFlag:
      fail("block size and normalisation flag disagree");
    case kHeaderNegativeDim:
      fail("negative dimension");
    case kHeaderAbsurdShape:
      fail("absurd shape");
    case kHeaderShapeNumel:
      fail("shape does not match the element count");
    case kHeaderTotalTooSmall:
      fail("total size smaller than the header");
    case kHeaderTruncatedPayload:
      fail("truncated: " + std::to_string(len) + " bytes of " + std::to_string(h.total_bytes));
    case kHeaderRawParams:
      fail("raw payload with coded parameters");
    case kHeaderRawSize:
      fail("raw payload size does not match its element count");
    case kHeaderProbBits:
      fail("unsupported probability precision");
    case kHeaderChunkElems:
      fail("bad chunk size");
    case kHeaderChunkCount:
      fail("chunk count does not match");
    case kHeaderBadMode:
      fail("unknown mode " + std::to_string(h.mode));
    case kHeaderOk:
      break;
  }
  fail("header check " + std::to_string(int(c)));  // unreachable: every HeaderCheck is worded above
}

}  // namespace

HeaderInfo parse_header(const uint8_t* src, uint64_t len) {
  HeaderInfo h{};
  if (HeaderCheck c = check_header_extent(src, len, h)) header_error(c, src, len, h);
  uint8_t hdr[kHeaderFixedBytes + 8 * kMaxNdim];
  std::memcpy(hdr, src, h.header_bytes);
  put_u32(hdr, kOffHeaderCrc, 0);
  if (crc32c(hdr, h.header_bytes) != get_u32(src, kOffHeaderCrc)) fail("header checksum mismatch");
  if (HeaderCheck c = check_header_fields(src, len, h, h.shape)) header_error(c, src, len, h);
  return h;
}

void decode(const uint8_t* src, uint64_t len, void* dst, uint64_t dst_bytes, int threads) {
  decode_prepared({prepare(src, len, dst, dst_bytes)}, threads);
}

std::vector<std::string> available_decoders() {
  std::vector<std::string> names{"scalar"};
  if (avx2::available()) names.push_back("avx2");
  if (avx512::available()) names.push_back("avx512");
  return names;
}

void set_decoder(const std::string& name) {
  if (name == "auto")
    g_decoder = Decoder::kAuto;
  else if (name == "scalar")
    g_decoder = Decoder::kScalar;
  else if (name == "avx2" && avx2::available())
    g_decoder = Decoder::kAvx2;
  else if (name == "avx512" && avx512::available())
    g_decoder = Decoder::kAvx512;
  else
    throw std::invalid_argument("nzdist: decoder '" + name + "' is not in this build");
}

void decode_batch(const std::vector<DecodeJob>& jobs, int threads) {
  std::vector<Prepared> prepared;
  prepared.reserve(jobs.size());
  for (const DecodeJob& j : jobs) prepared.push_back(prepare(j.src, j.len, j.dst, j.dst_bytes));
  decode_prepared(prepared, threads);
}

void decode_jobs(const gpu::DecodeJob* jobs, uint64_t n_jobs, int threads) {
  auto report = [&](uint64_t j, uint32_t bits) {
    if (jobs[j].err) *reinterpret_cast<uint32_t*>(jobs[j].err) |= bits;
  };
  std::vector<Prepared> ok;
  std::vector<uint64_t> owner;  // ok[i] is job owner[i]
  for (uint64_t j = 0; j < n_jobs; j++) {
    const gpu::DecodeJob& job = jobs[j];
    const uint8_t* src = reinterpret_cast<const uint8_t*>(job.src);
    uint64_t len = job.src_len;
    void* dst = reinterpret_cast<void*>(job.dst);
    const uint64_t eb = dtype_info(uint8_t(job.dtype)).bits / 8;
    if (!eb) {
      report(j, kErrMismatch);
      continue;
    }
    if (job.flags & gpu::kJobSlot) {
      SlotView sv;
      if (uint32_t e = check_slot(src, len, job.numel * eb, sv)) {
        report(j, e);
        continue;
      }
      if (sv.kind == kSlotRaw) {
        if (sv.len) std::memcpy(dst, src + kSlotHeaderBytes, sv.len);
        continue;
      }
      src += kSlotHeaderBytes;
      len = sv.len;
    }
    HeaderInfo h;
    try {
      h = parse_header(src, len);
    } catch (const FormatError&) {
      report(j, kErrHeader);
      continue;
    }
    if (h.dtype != job.dtype || h.numel != job.numel) {
      report(j, kErrMismatch);
      continue;
    }
    try {
      ok.push_back(prepare(src, len, dst, job.numel * eb));
      owner.push_back(j);
    } catch (const FormatError&) {
      report(j, kErrIndex);
    }
  }
  try {
    decode_prepared(ok, threads);
  } catch (const FormatError&) {  // some chunk is corrupt: decode the payloads one by one to tell which
    for (size_t i = 0; i < ok.size(); i++) {
      try {
        decode_prepared({ok[i]}, threads);
      } catch (const FormatError&) {
        report(owner[i], kErrStream);
      }
    }
  }
}

}  // namespace nz
