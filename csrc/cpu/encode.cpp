// CPU encoder: quantise (lossy only), cut elements into fields, entropy-code each field of each chunk with
// interleaved rANS where that is smaller than storing it raw.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>

#include "bytes.h"
#include "codec.h"
#include "crc32c.h"
#include "encode_kernels.h"
#include "parallel.h"

namespace nz {
namespace {

// Which kernels encode: the best this build has, unless a test asks for another (set_encoder).
enum class Encoder { kAuto, kScalar, kAvx2 };
Encoder g_encoder = Encoder::kAuto;

const EncodeKernels& encode_kernels() {
  Encoder e = g_encoder;
  if (e == Encoder::kAuto) e = enc_avx2::available() ? Encoder::kAvx2 : Encoder::kScalar;
  return e == Encoder::kAvx2 ? enc_avx2::kKernels : enc_scalar::kKernels;
}

uint32_t load_elem(const uint8_t* src, uint64_t i, int bytes) {
  if (bytes == 2) {
    uint16_t v;
    std::memcpy(&v, src + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, src + 4 * i, 4);
  return v;
}

// Block normaliser: s = m / 2^floor(log2 m) in [1, 2) for the block's largest finite magnitude m, so that
// m / s is exactly a power of two. Blocks with no finite non-zero value get s = 1.
float block_normaliser(const uint8_t* src, uint64_t begin, uint64_t end, const DTypeInfo& d, uint8_t dt) {
  float m = 0.f;
  int bytes = d.bits / 8;
  for (uint64_t i = begin; i < end; i++) {
    uint32_t u = load_elem(src, i, bytes);
    if ((u & exp_all_ones(d)) == exp_all_ones(d)) continue;
    float a = std::fabs(dtype_to_float(u, dt));
    m = a > m ? a : m;
  }
  if (m == 0.f) return 1.f;
  int e;
  float fr = std::frexp(m, &e);  // m = fr * 2^e, fr in [0.5, 1): exact
  return 2.f * fr;
}

// Symbol frequencies scaled to sum to kProbScale, every present symbol >= 1. Deterministic (the GPU encoder
// reproduces it): round to nearest, then the surplus or deficit goes to/comes from the most frequent symbols.
void normalise(const uint32_t* counts, int alphabet, uint64_t n, uint32_t* freq) {
  int64_t sum = 0;
  int top = 0;
  for (int s = 0; s < alphabet; s++) {
    if (counts[s] == 0) {
      freq[s] = 0;
      continue;
    }
    uint64_t f = (uint64_t(counts[s]) * kProbScale + n / 2) / n;
    freq[s] = f ? uint32_t(f) : 1u;
    sum += freq[s];
    if (counts[s] > counts[top]) top = s;
  }
  int64_t diff = int64_t(kProbScale) - sum;
  if (diff >= 0) {
    freq[top] += uint32_t(diff);
    return;
  }
  while (diff < 0) {  // take from the largest frequencies, never below 1
    int big = 0;
    for (int s = 1; s < alphabet; s++)
      if (freq[s] > freq[big]) big = s;
    uint32_t take = uint32_t(std::min<int64_t>(-diff, int64_t(freq[big]) - 1));
    if (take == 0) throw std::logic_error("nzdist: cannot normalise frequencies");
    freq[big] -= take;
    diff += take;
  }
}

// Per-thread buffers of the chunk encoder, reused from chunk to chunk (no per-chunk allocation or zeroing).
struct Scratch {
  std::vector<uint32_t> q;                  // lossy: the quantised values
  std::vector<uint32_t> hist;               // 4 interleaved histograms per field
  std::vector<uint32_t> joint;              // 16-bit elements: a histogram of whole patterns, kept zeroed
  std::vector<uint16_t> words[kMaxFields];  // coded fields' streams, written back to front
  EncTables tables;
};

// Histograms of every field in one pass over the chunk's elements. Four interleaved copies per field: runs of
// one symbol would otherwise serialise on one counter.
template <class T, int NF>
void count_fields(const T* src, uint64_t n, const FieldLayout& fl, uint32_t* hist, uint32_t* const* counts) {
  int shift[NF];
  uint32_t mask[NF], stride[NF], base[NF];
  uint32_t b = 0;
  for (int f = 0; f < NF; f++) {
    shift[f] = fl.shift[f];
    stride[f] = 1u << fl.width[f];
    mask[f] = stride[f] - 1;
    base[f] = b;
    b += 4 * stride[f];
  }
  std::fill(hist, hist + b, 0u);
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint32_t u0 = src[i], u1 = src[i + 1], u2 = src[i + 2], u3 = src[i + 3];
    for (int f = 0; f < NF; f++) {
      uint32_t* h = hist + base[f];
      h[(u0 >> shift[f]) & mask[f]]++;
      h[stride[f] + ((u1 >> shift[f]) & mask[f])]++;
      h[2 * stride[f] + ((u2 >> shift[f]) & mask[f])]++;
      h[3 * stride[f] + ((u3 >> shift[f]) & mask[f])]++;
    }
  }
  for (; i < n; i++)
    for (int f = 0; f < NF; f++) hist[base[f] + ((uint32_t(src[i]) >> shift[f]) & mask[f])]++;
  for (int f = 0; f < NF; f++) {
    const uint32_t* h = hist + base[f];
    for (uint32_t s = 0; s < stride[f]; s++)
      counts[f][s] = h[s] + h[stride[f] + s] + h[2 * stride[f] + s] + h[3 * stride[f] + s];
  }
}

// 16-bit elements cut into two fields (bf16 10 + 6, fp16 8 + 8 bits): one histogram of the whole 16-bit pattern,
// one increment per element instead of one per field, then both fields' counts as its row and column sums (the
// pass that sums also zeroes it for the next chunk). Pays off from a few thousand elements.
constexpr uint64_t kJointMinElems = 16384;

void count_joint16(const uint16_t* src, uint64_t n, const FieldLayout& fl, uint32_t* joint, uint32_t* const* counts) {
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint64_t v;
    std::memcpy(&v, src + i, 8);
    joint[v & 0xFFFF]++;
    joint[(v >> 16) & 0xFFFF]++;
    joint[(v >> 32) & 0xFFFF]++;
    joint[v >> 48]++;
  }
  for (; i < n; i++) joint[src[i]]++;
  const uint32_t rows = 1u << fl.width[0], cols = 1u << fl.width[1];
  uint32_t* col = counts[1];
  std::fill(col, col + cols, 0u);
  for (uint32_t r = 0; r < rows; r++) {
    uint32_t* row = joint + uint64_t(r) * cols;
    uint32_t sum = 0;
    for (uint32_t c = 0; c < cols; c++) {
      sum += row[c];
      col[c] += row[c];
    }
    std::fill(row, row + cols, 0u);
    counts[0][r] = sum;
  }
}

template <class T>
void count_all(const T* src, uint64_t n, const FieldLayout& fl, uint32_t* hist, uint32_t* const* counts) {
  switch (fl.n) {
    case 1:
      return count_fields<T, 1>(src, n, fl, hist, counts);
    case 2:
      return count_fields<T, 2>(src, n, fl, hist, counts);
    case 3:
      return count_fields<T, 3>(src, n, fl, hist, counts);
    default:
      return count_fields<T, 4>(src, n, fl, hist, counts);
  }
}

double entropy_bits(const uint32_t* counts, int alphabet, uint64_t n) {
  double bits = 0, ln = std::log2(double(n));
  for (int s = 0; s < alphabet; s++)
    if (counts[s]) bits += double(counts[s]) * (ln - std::log2(double(counts[s])));
  return bits;
}

struct CodedField {
  uint16_t n_used = 0;
  uint32_t states[kLanes];
  uint8_t table[kTableEntryBytes << kMaxSymbolBits];  // n_used 3-byte entries
  const uint16_t* words = nullptr;                    // n_words, in decode order (in the scratch)
  uint64_t n_words = 0;
};

Encoded::Chunk assemble(uint64_t n, uint64_t n_pad, const FieldLayout& fl, uint8_t coded_mask, const CodedField* coded,
                        const std::function<void(int, uint8_t*)>& write_raw) {
  // header | coded field headers+tables | raw fields | coded word streams (FORMAT.md, "Chunk").
  uint64_t size = kChunkHeaderBytes;
  for (int f = 0; f < fl.n; f++)
    if (coded_mask >> f & 1) size += align_up(kFieldHeaderBytes + kTableEntryBytes * coded[f].n_used);
  for (int f = 0; f < fl.n; f++)
    if (!(coded_mask >> f & 1)) size += align_up(raw_field_bytes(fl.width[f], n_pad));
  for (int f = 0; f < fl.n; f++)
    if (coded_mask >> f & 1) size += align_up(2 * coded[f].n_words);
  Encoded::Chunk chunk{std::unique_ptr<uint8_t[]>(new uint8_t[size]), size};
  uint8_t* out = chunk.data.get();
  std::memset(out, 0, kChunkHeaderBytes);
  put_u32(out, kChunkOffElems, uint32_t(n));
  out[kChunkOffCodedMask] = coded_mask;
  uint64_t off = kChunkHeaderBytes;
  auto pad_to = [&](uint64_t end) {  // padding bytes are zero
    std::memset(out + off, 0, end - off);
    off = end;
  };
  for (int f = 0; f < fl.n; f++) {
    if (!(coded_mask >> f & 1)) continue;
    const CodedField& cf = coded[f];
    const uint64_t start = off;
    put_u16(out, off, cf.n_used);
    put_u16(out, off + 2, 0);
    put_u32(out, off + 4, uint32_t(cf.n_words));
    std::memcpy(out + off + 8, cf.states, 4 * kLanes);
    std::memcpy(out + off + kFieldHeaderBytes, cf.table, kTableEntryBytes * cf.n_used);
    off += kFieldHeaderBytes + kTableEntryBytes * cf.n_used;
    pad_to(start + align_up(off - start));
  }
  for (int f = 0; f < fl.n; f++) {
    if (coded_mask >> f & 1) continue;
    const uint64_t bytes = raw_field_bytes(fl.width[f], n_pad);
    write_raw(f, out + off);
    off += bytes;
    pad_to(off + (align_up(bytes) - bytes));
  }
  for (int f = 0; f < fl.n; f++) {
    if (!(coded_mask >> f & 1)) continue;
    std::memcpy(out + off, coded[f].words, 2 * coded[f].n_words);
    off += 2 * coded[f].n_words;
    pad_to(off + (align_up(2 * coded[f].n_words) - 2 * coded[f].n_words));
  }
  put_u32(out, kChunkOffCrc, crc32c(out + 4, size - 4));
  return chunk;
}

// Histograms, coded-or-raw choice and entropy coding of one chunk whose elements are src[0..n) (the tensor
// itself when lossless, the quantised values when lossy).
template <class T>
Encoded::Chunk encode_fields(const T* src, uint64_t n, const FieldLayout& fl, const EncodeKernels& k, Scratch& s) {
  const uint64_t n_pad = (n + kLanes - 1) / kLanes * kLanes;
  uint32_t counts_buf[kMaxFields][1u << kMaxSymbolBits];
  uint32_t* counts[kMaxFields] = {counts_buf[0], counts_buf[1], counts_buf[2], counts_buf[3]};
  if (sizeof(T) == 2 && fl.n == 2 && fl.width[0] + fl.width[1] == 16 && n >= kJointMinElems) {
    s.joint.resize(1u << 16, 0u);
    count_joint16(reinterpret_cast<const uint16_t*>(src), n, fl, s.joint.data(), counts);
  } else {
    s.hist.resize(4 * kMaxFields << kMaxSymbolBits);
    count_all(src, n, fl, s.hist.data(), counts);
  }

  uint32_t freq[1u << kMaxSymbolBits];
  CodedField coded[kMaxFields];
  uint8_t coded_mask = 0;
  for (int f = 0; f < fl.n; f++) {
    const int width = fl.width[f], alphabet = 1 << width;
    const FieldSrc<T> fs{src, n, fl.shift[f], uint32_t(alphabet - 1)};
    int n_used = 0;
    for (int sym = 0; sym < alphabet; sym++) n_used += counts[f][sym] != 0;
    const uint64_t raw_bytes = raw_field_bytes(width, n_pad);
    if (!field_worth_coding(n, n > 0 ? entropy_bits(counts[f], alphabet, n) : 0.0, uint32_t(n_used), raw_bytes))
      continue;
    normalise(counts[f], alphabet, n, freq);
    CodedField& cf = coded[f];
    uint32_t c = 0, used = 0;
    for (int sym = 0; sym < alphabet; sym++) {
      if (!freq[sym]) continue;
      s.tables.sym[sym] = enc_symbol(freq[sym], c);
      s.tables.fc[sym] = freq[sym] | c << 12;
      s.tables.rcp[sym] = rcp_up(freq[sym]);
      const uint32_t e = uint32_t(sym) | ((freq[sym] - 1) << 10);
      cf.table[3 * used] = uint8_t(e);
      cf.table[3 * used + 1] = uint8_t(e >> 8);
      cf.table[3 * used + 2] = uint8_t(e >> 16);
      used++;
      c += freq[sym];
    }
    cf.n_used = uint16_t(used);
    s.words[f].resize(n + 2 * kLanes);
    uint16_t* end = s.words[f].data() + s.words[f].size();
    if constexpr (sizeof(T) == 2)
      cf.n_words = k.rans16(fs, s.tables, cf.states, end);
    else
      cf.n_words = k.rans32(fs, s.tables, cf.states, end);
    cf.words = end - cf.n_words;
    if (coded_field_bytes(used, cf.n_words) < raw_bytes) coded_mask |= uint8_t(1u << f);
  }
  return assemble(n, n_pad, fl, coded_mask, coded, [&](int f, uint8_t* dst) {
    const FieldSrc<T> fs{src, n, fl.shift[f], (1u << fl.width[f]) - 1};
    if constexpr (sizeof(T) == 2)
      k.raw16(fs, n_pad, fl.width[f], dst);
    else
      k.raw32(fs, n_pad, fl.width[f], dst);
  });
}

Encoded::Chunk encode_chunk(const uint8_t* src, uint64_t begin, uint64_t n, const EncodeParams& p, const DTypeInfo& d,
                            const FieldLayout& fl, const float* norms, const EncodeKernels& k) {
  thread_local Scratch scratch;
  const int bytes = d.bits / 8;
  const int drop = d.mant_bits - p.keep_bits;
  const bool lossy = drop > 0 || norms;
  if (!lossy) {  // lossless: the fields are cut straight from the caller's tensor
    if (bytes == 2) return encode_fields(reinterpret_cast<const uint16_t*>(src) + begin, n, fl, k, scratch);
    return encode_fields(reinterpret_cast<const uint32_t*>(src) + begin, n, fl, k, scratch);
  }
  std::vector<uint32_t>& q = scratch.q;
  q.resize(n);
  for (uint64_t i = 0; i < n; i++) {
    uint32_t u = load_elem(src, begin + i, bytes);
    if (norms && (u & exp_all_ones(d)) != exp_all_ones(d)) {
      float s = norms[(begin + i) / p.block_size];
      u = float_to_dtype(dtype_to_float(u, p.dtype) / s, p.dtype);
    }
    if (p.keep_bits == 0 && (u & (sign_bit(d) - 1)) > exp_all_ones(d))
      throw std::invalid_argument("nzdist: NaN cannot be stored with Lossy(mantissa_bits=0); use mantissa_bits >= 1");
    q[i] = round_mantissa(u, d, p.keep_bits) >> drop;
  }
  return encode_fields(q.data(), n, fl, k, scratch);
}

std::vector<uint8_t> make_header(const EncodeParams& p, uint8_t mode, uint8_t flags, int keep_bits, uint64_t numel,
                                 const int64_t* shape, int ndim, uint32_t num_chunks) {
  uint32_t header_bytes = uint32_t(header_bytes_for(uint64_t(ndim)));
  std::vector<uint8_t> h(header_bytes, 0);
  put_u32(h.data(), kOffMagic, kMagic);
  put_u16(h.data(), kOffVersion, kVersion);
  put_u16(h.data(), kOffHeaderBytes, uint16_t(header_bytes));
  h[kOffDtype] = p.dtype;
  h[kOffMode] = mode;
  h[kOffKeepBits] = uint8_t(keep_bits);
  h[kOffNdim] = uint8_t(ndim);
  h[kOffProbBits] = mode == kModeCoded ? kProbBits : 0;
  h[kOffFlags] = flags;
  put_u64(h.data(), kOffNumel, numel);
  put_u32(h.data(), kOffChunkElems, mode == kModeCoded ? p.chunk_elems : 0);
  put_u32(h.data(), kOffNumChunks, num_chunks);
  put_u32(h.data(), kOffBlockSize, (flags & kFlagNormalized) ? p.block_size : 0);
  for (int i = 0; i < ndim; i++) put_u64(h.data(), kOffShape + 8 * i, uint64_t(shape[i]));
  return h;
}

void seal_header(std::vector<uint8_t>& head, uint64_t total_bytes, uint32_t meta_crc) {
  put_u64(head.data(), kOffTotalBytes, total_bytes);
  put_u32(head.data(), kOffMetaCrc, meta_crc);
  uint32_t hb = get_u16(head.data(), kOffHeaderBytes);
  put_u32(head.data(), kOffHeaderCrc, 0);
  put_u32(head.data(), kOffHeaderCrc, crc32c(head.data(), hb));
}

void check_params(const EncodeParams& p, int ndim, const DTypeInfo& d) {
  if (d.bits == 0) throw std::invalid_argument("nzdist: unsupported dtype code " + std::to_string(p.dtype));
  if (ndim < 0 || ndim > int(kMaxNdim))
    throw std::invalid_argument("nzdist: tensors of up to 16 dimensions are supported, got " + std::to_string(ndim));
  if (p.keep_bits < 0 || p.keep_bits > d.mant_bits)
    throw std::invalid_argument("nzdist: mantissa bits to keep must be in 0.." + std::to_string(d.mant_bits));
  if (!chunk_elems_ok(p.chunk_elems))
    throw std::invalid_argument("nzdist: chunk_elems must be a multiple of 32 in 1024..16777216");
}

}  // namespace

void Encoded::write(uint8_t* dst, int threads) const {
  std::memcpy(dst, head_.data(), head_.size());
  if (raw_src_) {
    std::memcpy(dst + head_.size(), raw_src_, raw_bytes_);
    std::memset(dst + head_.size() + raw_bytes_, 0, total_bytes_ - head_.size() - raw_bytes_);
    return;
  }
  std::vector<uint64_t> offsets(chunks_.size());
  uint64_t off = head_.size();
  for (size_t c = 0; c < chunks_.size(); c++) {
    offsets[c] = off;
    off += chunks_[c].size;
  }
  parallel_for(chunks_.size(), threads,
               [&](uint64_t c) { std::memcpy(dst + offsets[c], chunks_[c].data.get(), chunks_[c].size); });
}

std::unique_ptr<Encoded> encode(const void* src_v, uint64_t numel, const int64_t* shape, int ndim,
                                const EncodeParams& params, int threads) {
  EncodeParams p = params;
  const DTypeInfo d = dtype_info(p.dtype);
  if (p.keep_bits < 0) p.keep_bits = d.mant_bits;
  check_params(p, ndim, d);
  const auto* src = static_cast<const uint8_t*>(src_v);
  const bool lossless = p.keep_bits == d.mant_bits && p.block_size == 0;
  const uint64_t elem_bytes = d.bits / 8;
  auto enc = std::make_unique<Encoded>();

  const uint64_t num_chunks = (numel + p.chunk_elems - 1) / p.chunk_elems;
  if (num_chunks > 0xFFFFFFFFull) throw std::invalid_argument("nzdist: tensor too large for one payload");
  std::vector<float> norms;
  if (p.block_size > 0) {
    uint64_t nblocks = (numel + p.block_size - 1) / p.block_size;
    norms.resize(nblocks);
    parallel_for(nblocks, threads, [&](uint64_t b) {
      norms[b] = block_normaliser(src, b * p.block_size, std::min<uint64_t>(numel, (b + 1) * p.block_size), d, p.dtype);
    });
  }
  const FieldLayout fl = field_layout(p.dtype, p.keep_bits);
  if (numel > 0) {
    enc->chunks_.resize(num_chunks);
    const EncodeKernels& kernels = encode_kernels();
    parallel_for(num_chunks, threads, [&](uint64_t c) {
      uint64_t begin = c * p.chunk_elems, n = std::min<uint64_t>(p.chunk_elems, numel - begin);
      enc->chunks_[c] = encode_chunk(src, begin, n, p, d, fl, norms.empty() ? nullptr : norms.data(), kernels);
    });
  }
  // Coded layout: header | normalisers | chunk index | chunks.
  uint8_t flags = uint8_t((lossless ? 0 : kFlagLossy) | (norms.empty() ? 0 : kFlagNormalized));
  std::vector<uint8_t> head = make_header(p, kModeCoded, flags, p.keep_bits, numel, shape, ndim, uint32_t(num_chunks));
  const uint64_t header_bytes = head.size();
  const uint64_t norm_bytes = align_up(4 * norms.size());
  const uint64_t index_bytes = align_up(8 * (num_chunks + 1));
  head.resize(header_bytes + norm_bytes + index_bytes, 0);
  for (size_t b = 0; b < norms.size(); b++) put_u32(head.data(), header_bytes + 4 * b, f32_bits(norms[b]));
  uint64_t off = head.size();
  for (uint64_t c = 0; c <= num_chunks; c++) {
    put_u64(head.data(), header_bytes + norm_bytes + 8 * c, off);
    if (c < num_chunks) off += enc->chunks_[c].size;
  }
  const uint64_t coded_total = off;
  const uint64_t raw_total = raw_payload_bytes(header_bytes, numel, elem_bytes);
  if (payload_stored_raw(lossless, raw_total, coded_total)) {
    enc->chunks_.clear();
    enc->head_ = make_header(p, kModeRaw, 0, p.keep_bits, numel, shape, ndim, 0);
    enc->raw_src_ = src;
    enc->raw_bytes_ = numel * elem_bytes;
    enc->total_bytes_ = raw_total;
    static const uint8_t zeros[kAlign] = {};
    uint32_t crc = crc32c(src, enc->raw_bytes_);
    crc = crc32c(zeros, raw_total - header_bytes - enc->raw_bytes_, crc);  // the alignment padding
    seal_header(enc->head_, raw_total, crc);
    return enc;
  }
  seal_header(head, coded_total, crc32c(head.data() + header_bytes, norm_bytes + index_bytes));
  enc->head_ = std::move(head);
  enc->total_bytes_ = coded_total;
  return enc;
}

std::vector<std::string> available_encoders() {
  std::vector<std::string> names{"scalar"};
  if (enc_avx2::available()) names.push_back("avx2");
  return names;
}

void set_encoder(const std::string& name) {
  if (name == "auto")
    g_encoder = Encoder::kAuto;
  else if (name == "scalar")
    g_encoder = Encoder::kScalar;
  else if (name == "avx2" && enc_avx2::available())
    g_encoder = Encoder::kAvx2;
  else
    throw std::invalid_argument("nzdist: encoder '" + name + "' is not in this build");
}

uint64_t encoder_self_check() { return enc_avx2::available() ? enc_avx2::division_mismatches() : 0; }

uint64_t max_encoded_bytes(uint64_t numel, int ndim, const EncodeParams& params) {
  EncodeParams p = params;
  const DTypeInfo d = dtype_info(p.dtype);
  if (p.keep_bits < 0) p.keep_bits = d.mant_bits;
  check_params(p, ndim, d);
  const uint64_t header_bytes = header_bytes_for(uint64_t(ndim));
  if (p.keep_bits == d.mant_bits && p.block_size == 0) return raw_payload_bytes(header_bytes, numel, d.bits / 8);
  // Lossy: every field of every chunk raw is the worst case (a field is coded only when that is smaller).
  const FieldLayout fl = field_layout(p.dtype, p.keep_bits);
  const uint64_t num_chunks = (numel + p.chunk_elems - 1) / p.chunk_elems;
  uint64_t total = header_bytes + align_up(8 * (num_chunks + 1));
  if (p.block_size) total += align_up(4 * ((numel + p.block_size - 1) / p.block_size));
  for (uint64_t c = 0; c < num_chunks; c++) {
    uint64_t n = std::min<uint64_t>(p.chunk_elems, numel - c * p.chunk_elems);
    uint64_t n_pad = (n + kLanes - 1) / kLanes * kLanes;
    total += kChunkHeaderBytes;
    for (int f = 0; f < fl.n; f++) total += align_up(raw_field_bytes(fl.width[f], n_pad));
  }
  return total;
}

}  // namespace nz
