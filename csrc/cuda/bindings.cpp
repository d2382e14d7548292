// nzdist._cuda: pybind11 wrapper of the CUDA codec's C API (api.h). Integers in (device addresses, sizes, the
// cudaStream_t as an int from torch.cuda.current_stream().cuda_stream), nothing else: no torch or CUDA headers,
// so one build serves any torch. Launch failures raise RuntimeError; payload errors land in device error words.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "api.h"

namespace py = pybind11;

namespace {

std::string describe(int code) {
  return std::string(nzg_error_name(code)) + " (" + std::to_string(code) + "): " + nzg_error_string(code);
}

void check(int code, const char* what) {
  if (code != 0) throw std::runtime_error(std::string("nzdist CUDA ") + what + ": " + describe(code));
}

void* as_ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

NzgEncodePlan plan_or_raise(uint64_t numel, int ndim, int dtype, int keep, uint32_t block, uint32_t chunk) {
  NzgEncodePlan p;
  if (nzg_encode_plan(numel, ndim, dtype, keep, block, chunk, &p) != 0)
    throw std::invalid_argument(
        "nzdist CUDA encode: unsupported parameters (dtype, ndim <= 16, mantissa bits, "
        "chunk_elems a multiple of 32 in 1024..16777216)");
  return p;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "nzdist CUDA codec (csrc/cuda); driven by nzdist.codec.cuda";
  m.attr("STATUS_BYTES") = kNzgStatusBytes;

  // Raises RuntimeError naming the CUDA runtime's error (e.g. cudaErrorInsufficientDriver) when it has none.
  m.def("device_count", [] {
    int n = 0;
    check(nzg_device_count(&n), "runtime");
    return n;
  });
  m.def("describe_error", &describe, py::arg("code"), "'cudaErrorName (code): message' of a CUDA error code");

  m.def(
      "decode_batch",
      [](uintptr_t jobs, int n_jobs, uint64_t total_items, int max_fields, bool verify, uintptr_t stream, int variant) {
        check(nzg_decode_batch(as_ptr(jobs), n_jobs, total_items, max_fields, verify ? 1 : 0, as_ptr(stream), variant),
              "decode");
      },
      py::arg("jobs_ptr"), py::arg("n_jobs"), py::arg("total_items"), py::arg("max_fields"), py::arg("verify"),
      py::arg("stream"), py::arg("variant") = 0);

  m.def("decode_variants", [] {
    py::list names;
    for (int v = 0; v < nzg_decode_variant_count(); v++) names.append(nzg_decode_variant_name(v));
    return names;
  });

  m.def("encode_plan", [](uint64_t numel, int ndim, int dtype, int keep, uint32_t block, uint32_t chunk) {
    NzgEncodePlan p = plan_or_raise(numel, ndim, dtype, keep, block, chunk);
    py::dict d;
    d["num_chunks"] = p.num_chunks;
    d["slot_bytes"] = p.slot_bytes;
    d["status_off"] = p.status_off;
    d["norms_off"] = p.norms_off;
    d["meta_off"] = p.meta_off;
    d["offsets_off"] = p.offsets_off;
    d["staging_off"] = p.staging_off;
    d["workspace_bytes"] = p.workspace_bytes;
    return d;
  });

  m.def("encode_stage", [](uintptr_t src, uint64_t numel, std::vector<int64_t> shape, int dtype, int keep,
                           uint32_t block, uint32_t chunk, uintptr_t workspace, uintptr_t stream) {
    plan_or_raise(numel, int(shape.size()), dtype, keep, block, chunk);
    check(nzg_encode_stage(as_ptr(src), numel, shape.data(), int(shape.size()), dtype, keep, block, chunk,
                           as_ptr(workspace), as_ptr(stream)),
          "encode");
  });

  m.def("encode_write",
        [](uintptr_t src, uint64_t numel, std::vector<int64_t> shape, int dtype, int keep, uint32_t block,
           uint32_t chunk, uintptr_t workspace, uintptr_t out, uint64_t total, uintptr_t stream) {
          plan_or_raise(numel, int(shape.size()), dtype, keep, block, chunk);
          check(nzg_encode_write(as_ptr(src), numel, shape.data(), int(shape.size()), dtype, keep, block, chunk,
                                 as_ptr(workspace), as_ptr(out), total, as_ptr(stream)),
                "encode");
        });
}
