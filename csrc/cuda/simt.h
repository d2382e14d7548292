// A warp as the per-chunk code sees it, in two implementations: DeviceWarp (one CUDA warp, lane values in
// registers) and HostWarp (32 lanes emulated in lane order, lane values in arrays). The chunk codec in chunk.h
// is written once against this interface, so the CPU tests run the very code the GPU runs, collectives and all.
//
// Rules the shared code keeps: per-lane work goes through each(); a value that is the same in every lane
// (warp-uniform: pos, base, error codes) is a plain variable computed only from uniform inputs or collectives;
// shared memory written by some lanes and read by others is separated by sync().
#pragma once

#include <cstdint>

#include "../format.h"

namespace nz {
namespace gpu {

constexpr uint32_t kFullMask = 0xFFFFFFFFu;

NZ_HD int popc(uint32_t m) {
#if defined(__CUDA_ARCH__)
  return __popc(m);
#else
  return __builtin_popcount(m);
#endif
}

NZ_HD uint32_t lanemask_lt(int l) { return (1u << l) - 1u; }

// Rotate right by n (0..31): one funnel shift on the GPU.
NZ_HD uint32_t rotr(uint32_t w, uint32_t n) {
#if defined(__CUDA_ARCH__)
  return __funnelshift_r(w, w, n);
#else
  return (w >> n) | (w << ((32u - n) & 31u));
#endif
}

NZ_HD int lowest_bit(uint32_t m) {  // m != 0
#if defined(__CUDA_ARCH__)
  return __ffs(int(m)) - 1;
#else
  return __builtin_ctz(m);
#endif
}

struct HostWarp {
  template <class T>
  struct Reg {
    T v[kLanes];
    T& operator[](int l) { return v[l]; }
    const T& operator[](int l) const { return v[l]; }
  };
  template <class F>
  static void each(F&& f) {
    for (int l = 0; l < kLanes; l++) f(l);
  }
  template <class F>
  static uint32_t ballot(F&& f) {
    uint32_t m = 0;
    for (int l = 0; l < kLanes; l++) m |= uint32_t(bool(f(l))) << l;
    return m;
  }
  // out[l] = r[src(l) % 32]
  template <class T, class F>
  static Reg<T> shfl(const Reg<T>& r, F&& src) {
    Reg<T> o;
    for (int l = 0; l < kLanes; l++) o[l] = r[src(l) & 31];
    return o;
  }
  template <class T>
  static T bcast(const Reg<T>& r, int src) {
    return r[src];
  }
  template <class T>
  static Reg<T> shfl_up1(const Reg<T>& r, T fill) {  // out[l] = r[l - 1], out[0] = fill
    Reg<T> o;
    o[0] = fill;
    for (int l = 1; l < kLanes; l++) o[l] = r[l - 1];
    return o;
  }
  static uint32_t sum(const Reg<uint32_t>& r) {
    uint32_t s = 0;
    for (int l = 0; l < kLanes; l++) s += r[l];
    return s;
  }
  static uint32_t xor_all(const Reg<uint32_t>& r) {
    uint32_t s = 0;
    for (int l = 0; l < kLanes; l++) s ^= r[l];
    return s;
  }
  // Exclusive prefix sum over lanes.
  static Reg<uint32_t> scan_excl(const Reg<uint32_t>& r) {
    Reg<uint32_t> o;
    uint32_t s = 0;
    for (int l = 0; l < kLanes; l++) {
      o[l] = s;
      s += r[l];
    }
    return o;
  }
  // Lowest index among the lanes holding the largest value (ties to the lowest index).
  static uint32_t argmax(const Reg<uint32_t>& val, const Reg<uint32_t>& idx) {
    uint32_t bv = val[0], bi = idx[0];
    for (int l = 1; l < kLanes; l++)
      if (val[l] > bv || (val[l] == bv && idx[l] < bi)) bv = val[l], bi = idx[l];
    return bi;
  }
  static void atomic_add(uint32_t* p, uint32_t v) { *p += v; }
  static void report(uint32_t* err, uint32_t code) {
    if (err) *err |= code;
  }
  static void sync() {}
  // Pooled decode tables (decode variant v3): take `need` free slots of `slots` from a block's pool word, all at
  // once (a warp never holds some while waiting for more, so no two warps can block each other). On the host
  // the warps run one after another: the slots are always there.
  static uint32_t acquire_slots(uint32_t* word, int slots, int need) {
    uint32_t got = 0, avail = ~*word & ((slots >= 32 ? 0u : 1u << slots) - 1u);
    for (int k = 0; k < need && avail; k++) {
      got |= avail & (0u - avail);
      avail &= avail - 1;
    }
    *word |= got;
    return got;
  }
  static void release_slots(uint32_t* word, uint32_t got) { *word &= ~got; }
};

#if defined(__CUDACC__)
struct DeviceWarp {
  template <class T>
  struct Reg {
    T v;
    __device__ __forceinline__ T& operator[](int) { return v; }
    __device__ __forceinline__ const T& operator[](int) const { return v; }
  };
  static __device__ __forceinline__ int lane() { return int(threadIdx.x & 31u); }
  template <class F>
  static __device__ __forceinline__ void each(F&& f) {
    f(lane());
  }
  template <class F>
  static __device__ __forceinline__ uint32_t ballot(F&& f) {
    return __ballot_sync(kFullMask, bool(f(lane())));
  }
  template <class T, class F>
  static __device__ __forceinline__ Reg<T> shfl(const Reg<T>& r, F&& src) {
    return Reg<T>{__shfl_sync(kFullMask, r.v, src(lane()) & 31)};
  }
  template <class T>
  static __device__ __forceinline__ T bcast(const Reg<T>& r, int src) {
    return __shfl_sync(kFullMask, r.v, src);
  }
  template <class T>
  static __device__ __forceinline__ Reg<T> shfl_up1(const Reg<T>& r, T fill) {
    T v = __shfl_up_sync(kFullMask, r.v, 1);
    return Reg<T>{lane() == 0 ? fill : v};
  }
  static __device__ __forceinline__ uint32_t sum(const Reg<uint32_t>& r) { return __reduce_add_sync(kFullMask, r.v); }
  static __device__ __forceinline__ uint32_t xor_all(const Reg<uint32_t>& r) {
    return __reduce_xor_sync(kFullMask, r.v);
  }
  static __device__ __forceinline__ Reg<uint32_t> scan_excl(const Reg<uint32_t>& r) {
    uint32_t x = r.v;
    for (int d = 1; d < 32; d <<= 1) {
      uint32_t y = __shfl_up_sync(kFullMask, x, d);
      if (lane() >= d) x += y;
    }
    return Reg<uint32_t>{x - r.v};
  }
  static __device__ __forceinline__ uint32_t argmax(const Reg<uint32_t>& val, const Reg<uint32_t>& idx) {
    uint32_t bv = val.v, bi = idx.v;
    for (int d = 16; d > 0; d >>= 1) {
      uint32_t ov = __shfl_xor_sync(kFullMask, bv, d), oi = __shfl_xor_sync(kFullMask, bi, d);
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    return bi;
  }
  static __device__ __forceinline__ void atomic_add(uint32_t* p, uint32_t v) { atomicAdd(p, v); }
  static __device__ __forceinline__ void report(uint32_t* err, uint32_t code) {
    if (err && lane() == 0) atomicOr(err, code);
  }
  static __device__ __forceinline__ void sync() { __syncwarp(); }
  static __device__ __forceinline__ uint32_t acquire_slots(uint32_t* word, int slots, int need) {
    uint32_t got = 0;
    if (need > 0 && lane() == 0) {
      const uint32_t all = (slots >= 32 ? 0u : 1u << slots) - 1u;
      for (;;) {
        const uint32_t old = atomicOr(word, 0u);  // an atomic read: racecheck sees no unordered access
        uint32_t avail = ~old & all, want = 0;
        for (int k = 0; k < need && avail; k++) {
          want |= avail & (0u - avail);
          avail &= avail - 1;
        }
        if (__popc(want) == need && atomicCAS(word, old, old | want) == old) {
          got = want;
          break;
        }
        __nanosleep(64);  // held by other warps of the block until their chunk is decoded
      }
      __threadfence_block();
    }
    return __shfl_sync(kFullMask, got, 0);
  }
  static __device__ __forceinline__ void release_slots(uint32_t* word, uint32_t got) {
    __syncwarp();  // every lane is done with the tables
    if (got && lane() == 0) {
      __threadfence_block();
      atomicAnd(word, ~got);
    }
  }
};
#endif

}  // namespace gpu
}  // namespace nz
