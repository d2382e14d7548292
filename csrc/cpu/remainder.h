// The fp32 <-> (bf16, low 16 bits, exceptions) split of nzdist/fsdp/remainder.py, fused into one pass each way for
// host shards (the device keeps torch's elementwise ops). The rule and the exception table are described there.
#pragma once

#include <cstdint>

namespace nz {

// From x (fp32 bit patterns) and hi (its bf16 cast, torch's own, whatever pattern it gives NaNs): writes the low
// halves lo[n]; index/upper[room] get the first `room` positions, in increasing order, whose high half is not
// hi - (lo > 0x8000), and those true high halves; unused slots get (n, 0). Returns how many there are (> room
// means the table overflowed).
uint64_t remainder_split(const uint32_t* x, const uint16_t* hi, uint64_t n, uint16_t* lo, int64_t* index,
                         uint16_t* upper, uint64_t room, int threads);

// out[n] = the fp32 values of (hi, lo, index, upper). Throws std::invalid_argument for an index outside [0, n].
void remainder_join(const uint16_t* hi, const uint16_t* lo, const int64_t* index, const uint16_t* upper, uint64_t room,
                    uint64_t n, uint32_t* out, int threads);

}  // namespace nz
