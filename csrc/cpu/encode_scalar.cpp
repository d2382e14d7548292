// The reference encoder kernels: one lane and one element at a time. Portable; the SIMD kernels must write the
// same bytes.
#include "bytes.h"
#include "encode_kernels.h"

namespace nz::enc_scalar {
namespace {

template <class T>
uint64_t rans(const FieldSrc<T>& f, const EncTables& t, uint32_t* states, uint16_t* end) {
  for (int l = 0; l < kLanes; l++) states[l] = kRansL;
  uint16_t* p = end;
  const uint64_t steps = (f.n + kLanes - 1) / kLanes;
  for (uint64_t step = steps; step-- > 0;) {  // back to front: the decoder reads front to back
    const uint64_t base = step * kLanes;
    const int active = int(f.n - base < uint64_t(kLanes) ? f.n - base : kLanes);
    for (int l = active - 1; l >= 0; l--) rans_encode_step(states[l], t.sym[f.at(base + l)], p);
  }
  return uint64_t(end - p);
}

template <class T>
void raw(const FieldSrc<T>& f, uint64_t n_pad, int width, uint8_t* dst) {
  if (width == 8) {
    for (uint64_t i = 0; i < f.n; i++) dst[i] = uint8_t(f.at(i));
    for (uint64_t i = f.n; i < n_pad; i++) dst[i] = 0;
    return;
  }
  for (uint64_t g = 0; g < n_pad / kLanes; g++) {
    for (int j = 0; j < width; j++) {
      uint32_t w = 0;
      for (int l = 0; l < kLanes; l++) {
        const uint64_t i = g * kLanes + l;
        if (i < f.n) w |= ((f.at(i) >> j) & 1u) << l;
      }
      put_u32(dst, (g * width + j) * 4, w);
    }
  }
}

}  // namespace

const EncodeKernels kKernels = {rans<uint16_t>, rans<uint32_t>, raw<uint16_t>, raw<uint32_t>};

}  // namespace nz::enc_scalar
