// CPU encoder: quantise (lossy only), cut elements into fields, entropy-code each field of each chunk with
// interleaved rANS where that is smaller than storing it raw.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "bytes.h"
#include "codec.h"
#include "crc32c.h"
#include "parallel.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace nz {
namespace {

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

struct CodedField {
  uint16_t n_used = 0;
  uint32_t states[kLanes];
  std::vector<uint8_t> table;   // n_used 3-byte entries
  std::vector<uint16_t> words;  // in decode order
};

// Per-symbol encoder constants. x / freq is a multiply by a 33-bit reciprocal (Granlund-Montgomery: exact for
// every 32-bit x), several times faster than a hardware divide, which dominated encoding.
struct EncSymbol {
  uint64_t rcp;      // ceil(2^(32 + shift) / freq)
  uint32_t shift;    // ceil(log2 freq)
  uint32_t freq, cum;
  uint64_t x_max;    // renormalise when x >= freq << (32 - kProbBits)
};

EncSymbol enc_symbol(uint32_t freq, uint32_t cum) {
  uint32_t shift = 0;
  while ((1u << shift) < freq) shift++;
  uint64_t rcp = ((uint64_t(1) << (32 + shift)) + freq - 1) / freq;
  return {rcp, shift, freq, cum, uint64_t(freq) << (32 - kProbBits)};
}

// Interleaved rANS over `n` symbols: element j uses lane j % 32. Encodes back to front so the decoder reads
// the word stream front to back and writes its output in order.
void rans_encode(const uint16_t* syms, uint64_t n, const EncSymbol* table, CodedField& out) {
  for (int l = 0; l < kLanes; l++) out.states[l] = kRansL;
  out.words.resize(n + 1);  // at most one word per symbol, +1: the branch-free store writes one ahead
  uint64_t emitted = 0;
  uint16_t* words = out.words.data();
  const uint64_t steps = (n + kLanes - 1) / kLanes;
  for (uint64_t step = steps; step-- > 0;) {
    const uint64_t base = step * kLanes;
    const int active = int(std::min<uint64_t>(kLanes, n - base));
    for (int l = active - 1; l >= 0; l--) {
      const EncSymbol& e = table[syms[base + l]];
      uint32_t x = out.states[l];
      // Branch-free renormalisation: whether a lane emits is data-dependent and close to a coin flip.
      const bool emit = x >= e.x_max;
      words[emitted] = uint16_t(x & 0xFFFF);
      emitted += emit;
      x >>= 16 * unsigned(emit);  // a shift, not a select: compilers turn the select into a mispredicted branch
      uint32_t q = uint32_t((static_cast<unsigned __int128>(x) * e.rcp) >> (32 + e.shift));
      out.states[l] = (q << kProbBits) + (x - q * e.freq) + e.cum;
    }
  }
  out.words.resize(emitted);
  std::reverse(out.words.begin(), out.words.end());
}

// Raw field storage: bytes for 8-bit fields, bit-planes (per 32 elements, `width` u32 words) otherwise.
void write_raw_field(const uint16_t* vals, uint64_t n_pad, int width, uint8_t* dst) {
  if (width == 8) {
    for (uint64_t i = 0; i < n_pad; i++) dst[i] = uint8_t(vals[i]);
    return;
  }
  for (uint64_t g = 0; g < n_pad / kLanes; g++) {
    const uint16_t* v = vals + g * kLanes;
#if defined(__AVX2__)
    // Bytes of the 32 values (low and high halves), then each plane is one movemask of the bit moved to the top.
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 16));
    const __m256i lo_mask = _mm256_set1_epi16(0xFF);
    const __m256i lo = _mm256_permute4x64_epi64(
        _mm256_packus_epi16(_mm256_and_si256(a, lo_mask), _mm256_and_si256(b, lo_mask)), 0xD8);
    const __m256i hi = _mm256_permute4x64_epi64(
        _mm256_packus_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8)), 0xD8);
    for (int j = 0; j < width; j++) {
      const __m256i src = j < 8 ? lo : hi;
      // shifting 16-bit lanes left by 7 - (j % 8) puts bit j % 8 of each byte at that byte's top bit
      const uint32_t w = uint32_t(_mm256_movemask_epi8(_mm256_sll_epi16(src, _mm_cvtsi32_si128(7 - j % 8))));
      put_u32(dst, (g * width + j) * 4, w);
    }
#else
    for (int j = 0; j < width; j++) {
      uint32_t w = 0;
      for (int l = 0; l < kLanes; l++) w |= uint32_t((v[l] >> j) & 1u) << l;
      put_u32(dst, (g * width + j) * 4, w);
    }
#endif
  }
}

double entropy_bits(const uint32_t* counts, int alphabet, uint64_t n) {
  double bits = 0, ln = std::log2(double(n));
  for (int s = 0; s < alphabet; s++)
    if (counts[s]) bits += double(counts[s]) * (ln - std::log2(double(counts[s])));
  return bits;
}

std::vector<uint8_t> encode_chunk(const uint8_t* src, uint64_t begin, uint64_t n, const EncodeParams& p,
                                  const DTypeInfo& d, const FieldLayout& fl, const float* norms) {
  const int bytes = d.bits / 8;
  const int drop = d.mant_bits - p.keep_bits;
  const bool lossy = drop > 0 || norms;
  const uint64_t n_pad = (n + kLanes - 1) / kLanes * kLanes;

  std::vector<uint32_t> q(n_pad, 0);
  if (!lossy) {  // lossless: q is the bit pattern; a plain widening copy the compiler vectorises
    if (bytes == 2) {
      const auto* in = reinterpret_cast<const uint16_t*>(src) + begin;
      for (uint64_t i = 0; i < n; i++) q[i] = in[i];
    } else {
      std::memcpy(q.data(), src + 4 * begin, 4 * n);
    }
  } else {
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
  }

  std::vector<uint16_t> vals(n_pad);
  std::vector<uint32_t> counts(1u << kMaxSymbolBits), freq(1u << kMaxSymbolBits);
  std::vector<uint32_t> partial(4u << kMaxSymbolBits);  // 4 interleaved histograms: runs of one symbol
                                                        // would otherwise serialise on one counter
  std::vector<EncSymbol> enc_table(1u << kMaxSymbolBits);
  CodedField coded[kMaxFields];
  std::vector<uint16_t> raw_vals[kMaxFields];
  uint8_t coded_mask = 0;
  for (int f = 0; f < fl.n; f++) {
    const int width = fl.width[f], alphabet = 1 << width;
    const uint32_t mask = uint32_t(alphabet - 1);
    for (uint64_t i = 0; i < n_pad; i++) vals[i] = uint16_t((q[i] >> fl.shift[f]) & mask);
    std::fill(partial.begin(), partial.begin() + 4 * alphabet, 0u);
    uint32_t* h = partial.data();
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      h[vals[i]]++;
      h[alphabet + vals[i + 1]]++;
      h[2 * alphabet + vals[i + 2]]++;
      h[3 * alphabet + vals[i + 3]]++;
    }
    for (; i < n; i++) h[vals[i]]++;
    for (int sym = 0; sym < alphabet; sym++)
      counts[sym] = h[sym] + h[alphabet + sym] + h[2 * alphabet + sym] + h[3 * alphabet + sym];
    int n_used = 0;
    for (int s = 0; s < alphabet; s++) n_used += counts[s] != 0;
    const double raw_bits = double(raw_field_bytes(width, n_pad)) * 8;
    const double overhead_bits = 8.0 * (kFieldHeaderBytes + kTableEntryBytes * n_used + 2 * kAlign);
    // Code only where it saves >= 1%: a field that barely compresses (fp32 low mantissa bytes) decodes
    // several times faster raw.
    if (n > 0 && entropy_bits(counts.data(), alphabet, n) + overhead_bits < 0.99 * raw_bits) {
      normalise(counts.data(), alphabet, n, freq.data());
      uint32_t c = 0;
      CodedField& cf = coded[f];
      for (int s = 0; s < alphabet; s++) {
        if (freq[s]) enc_table[s] = enc_symbol(freq[s], c);
        c += freq[s];
        if (freq[s]) {
          uint32_t e = uint32_t(s) | ((freq[s] - 1) << 10);
          cf.table.push_back(uint8_t(e));
          cf.table.push_back(uint8_t(e >> 8));
          cf.table.push_back(uint8_t(e >> 16));
        }
      }
      cf.n_used = uint16_t(cf.table.size() / kTableEntryBytes);
      rans_encode(vals.data(), n, enc_table.data(), cf);
      double coded_bytes = kFieldHeaderBytes + align_up(cf.table.size()) + align_up(2 * cf.words.size());
      if (coded_bytes < raw_bits / 8) {
        coded_mask |= uint8_t(1u << f);
        continue;
      }
    }
    raw_vals[f] = vals;
  }

  // Assemble: header | coded field headers+tables | raw fields | coded word streams (FORMAT.md, "Chunk").
  uint64_t size = kChunkHeaderBytes;
  for (int f = 0; f < fl.n; f++)
    if (coded_mask >> f & 1) size += align_up(kFieldHeaderBytes + coded[f].table.size());
  for (int f = 0; f < fl.n; f++)
    if (!(coded_mask >> f & 1)) size += align_up(raw_field_bytes(fl.width[f], n_pad));
  for (int f = 0; f < fl.n; f++)
    if (coded_mask >> f & 1) size += align_up(2 * coded[f].words.size());
  std::vector<uint8_t> out(size, 0);
  put_u32(out.data(), kChunkOffElems, uint32_t(n));
  out[kChunkOffCodedMask] = coded_mask;
  uint64_t off = kChunkHeaderBytes;
  for (int f = 0; f < fl.n; f++) {
    if (!(coded_mask >> f & 1)) continue;
    const CodedField& cf = coded[f];
    put_u16(out.data(), off, cf.n_used);
    put_u32(out.data(), off + 4, uint32_t(cf.words.size()));
    for (int l = 0; l < kLanes; l++) put_u32(out.data(), off + 8 + 4 * l, cf.states[l]);
    std::memcpy(out.data() + off + kFieldHeaderBytes, cf.table.data(), cf.table.size());
    off += align_up(kFieldHeaderBytes + cf.table.size());
  }
  for (int f = 0; f < fl.n; f++) {
    if (coded_mask >> f & 1) continue;
    write_raw_field(raw_vals[f].data(), n_pad, fl.width[f], out.data() + off);
    off += align_up(raw_field_bytes(fl.width[f], n_pad));
  }
  for (int f = 0; f < fl.n; f++) {
    if (!(coded_mask >> f & 1)) continue;
    for (size_t w = 0; w < coded[f].words.size(); w++) put_u16(out.data(), off + 2 * w, coded[f].words[w]);
    off += align_up(2 * coded[f].words.size());
  }
  put_u32(out.data(), kChunkOffCrc, crc32c(out.data() + 4, size - 4));
  return out;
}

std::vector<uint8_t> make_header(const EncodeParams& p, uint8_t mode, uint8_t flags, int keep_bits, uint64_t numel,
                                 const int64_t* shape, int ndim, uint32_t num_chunks) {
  uint32_t header_bytes = uint32_t(align_up(kHeaderFixedBytes + 8 * uint64_t(ndim)));
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
  if (p.chunk_elems < 1024 || p.chunk_elems > (1u << 24) || p.chunk_elems % kLanes)
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
    off += chunks_[c].size();
  }
  parallel_for(chunks_.size(), threads,
               [&](uint64_t c) { std::memcpy(dst + offsets[c], chunks_[c].data(), chunks_[c].size()); });
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
      norms[b] = block_normaliser(src, b * p.block_size, std::min<uint64_t>(numel, (b + 1) * p.block_size), d,
                                  p.dtype);
    });
  }
  const FieldLayout fl = field_layout(p.dtype, p.keep_bits);
  if (numel > 0) {
    enc->chunks_.resize(num_chunks);
    parallel_for(num_chunks, threads, [&](uint64_t c) {
      uint64_t begin = c * p.chunk_elems, n = std::min<uint64_t>(p.chunk_elems, numel - begin);
      enc->chunks_[c] = encode_chunk(src, begin, n, p, d, fl, norms.empty() ? nullptr : norms.data());
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
    if (c < num_chunks) off += enc->chunks_[c].size();
  }
  const uint64_t coded_total = off;
  const uint64_t raw_total = align_up(header_bytes + numel * elem_bytes);
  if (lossless && raw_total <= coded_total) {  // incompressible or tiny: the raw layout is the payload
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

uint64_t max_encoded_bytes(uint64_t numel, int ndim, const EncodeParams& params) {
  EncodeParams p = params;
  const DTypeInfo d = dtype_info(p.dtype);
  if (p.keep_bits < 0) p.keep_bits = d.mant_bits;
  check_params(p, ndim, d);
  const uint64_t header_bytes = align_up(kHeaderFixedBytes + 8 * uint64_t(ndim));
  if (p.keep_bits == d.mant_bits && p.block_size == 0) return align_up(header_bytes + numel * (d.bits / 8));
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
