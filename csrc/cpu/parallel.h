// parallel_for over independent work items (chunks). Threads are started per call: a call is one tensor or one
// batch of tensors, milliseconds of work, so the ~20 us start-up is noise, and no pool outlives the module
// (nothing to shut down at interpreter exit, nothing shared with torch's or OpenMP's pools).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace nz {

int default_threads();
void set_default_threads(int n);

// fn(item) for item in [0, n); the first exception thrown by any item is rethrown after all threads stop.
template <class Fn>
void parallel_for(uint64_t n, int threads, Fn&& fn) {
  if (threads <= 0) threads = default_threads();
  uint64_t workers = std::min<uint64_t>(uint64_t(threads), n);
  if (workers <= 1) {
    for (uint64_t i = 0; i < n; i++) fn(i);
    return;
  }
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (;;) {
      uint64_t i = next.fetch_add(1);
      if (i >= n || failed.load(std::memory_order_relaxed)) return;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> g(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (uint64_t t = 1; t < workers; t++) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace nz
