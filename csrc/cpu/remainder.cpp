#include "remainder.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.h"

namespace nz {
namespace {

constexpr uint64_t kBlock = uint64_t(1) << 16;  // elements per work item

// The high half the rounding rule restores: round-to-nearest-even carried into it only when the low half is
// above one half (ties and NaNs are the exceptions). 16-bit arithmetic, as the Python reference.
inline uint16_t high_guess(uint16_t hi, uint16_t lo) { return uint16_t(hi - (lo > 0x8000u ? 1u : 0u)); }

}  // namespace

uint64_t remainder_split(const uint32_t* x, const uint16_t* hi, uint64_t n, uint16_t* lo, int64_t* index,
                         uint16_t* upper, uint64_t room, int threads) {
  const uint64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<std::vector<uint64_t>> found(blocks);  // per block: its first `room` exception positions
  std::vector<uint64_t> counts(blocks, 0);
  parallel_for(blocks, threads, [&](uint64_t b) {
    const uint64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
    uint64_t count = 0;
    for (uint64_t i = i0; i < i1; i++) {
      const uint16_t l = uint16_t(x[i]), h = uint16_t(x[i] >> 16);
      lo[i] = l;
      if (high_guess(hi[i], l) != h) {
        if (found[b].size() < room) found[b].push_back(i);
        count++;
      }
    }
    counts[b] = count;
  });
  uint64_t total = 0, k = 0;
  for (uint64_t b = 0; b < blocks; b++) {
    total += counts[b];
    for (uint64_t i : found[b]) {
      if (k == room) break;
      index[k] = int64_t(i);
      upper[k++] = uint16_t(x[i] >> 16);
    }
  }
  for (; k < room; k++) {
    index[k] = int64_t(n);
    upper[k] = 0;
  }
  return total;
}

void remainder_join(const uint16_t* hi, const uint16_t* lo, const int64_t* index, const uint16_t* upper, uint64_t room,
                    uint64_t n, uint32_t* out, int threads) {
  for (uint64_t k = 0; k < room; k++)
    if (index[k] < 0 || uint64_t(index[k]) > n)
      throw std::invalid_argument("nzdist remainder: exception index " + std::to_string(index[k]) +
                                  " outside the shard's " + std::to_string(n) + " elements");
  parallel_for((n + kBlock - 1) / kBlock, threads, [&](uint64_t b) {
    const uint64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
    for (uint64_t i = i0; i < i1; i++) out[i] = uint32_t(high_guess(hi[i], lo[i])) << 16 | lo[i];
  });
  for (uint64_t k = 0; k < room; k++)  // slot n is the unused entries' dummy
    if (uint64_t(index[k]) < n) out[index[k]] = uint32_t(upper[k]) << 16 | lo[index[k]];
}

}  // namespace nz
