// pybind11 bindings: integers (data pointers, sizes) in, integers and dicts out. No torch headers, so the
// extension is independent of the installed torch's ABI; Python passes tensor.data_ptr().
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/codec.h"
#include "cpu/crc32c.h"
#include "cpu/hostmem.h"
#include "cpu/parallel.h"
#include "cpu/remainder.h"
#include "cuda/records.h"
#include "validate.h"

namespace py = pybind11;

namespace {

// nzdist.FormatError, looked up once at import; a plain handle because pybind11's translators are function
// pointers (no captures). Deliberately never released: it lives as long as the interpreter.
PyObject* g_format_error = nullptr;

const uint8_t* as_ptr(uintptr_t p) { return reinterpret_cast<const uint8_t*>(p); }

py::dict header_dict(const nz::HeaderInfo& h) {
  py::dict d;
  d["dtype"] = int(h.dtype);
  d["mode"] = int(h.mode);
  d["keep_bits"] = int(h.keep_bits);
  d["flags"] = int(h.flags);
  py::list shape;
  for (int i = 0; i < h.ndim; i++) shape.append(h.shape[i]);
  d["shape"] = shape;
  d["numel"] = h.numel;
  d["total_bytes"] = h.total_bytes;
  d["header_bytes"] = h.header_bytes;
  d["chunk_elems"] = h.chunk_elems;
  d["num_chunks"] = h.num_chunks;
  d["block_size"] = h.block_size;
  return d;
}

// The format's vocabulary, so Python copies no table: dtype codes (csrc/format.h), chunk sizes and the GPU's error
// bits (csrc/validate.h), the host/GPU records (csrc/cuda/records.h) as field -> (byte offset, bytes).
void add_constants(py::module_& m) {
  py::dict dtypes;
  for (uint8_t code : {nz::kBF16, nz::kFP16, nz::kFP32}) {
    const nz::DTypeInfo d = nz::dtype_info(code);
    py::dict e;
    e["name"] = code == nz::kBF16 ? "bfloat16" : code == nz::kFP16 ? "float16" : "float32";
    e["bits"] = d.bits;
    e["exp_bits"] = d.exp_bits;
    e["mant_bits"] = d.mant_bits;
    e["max_fields"] = nz::field_layout(code, d.mant_bits).n;  // lossless: the most fields a payload has
    dtypes[py::int_(code)] = e;
  }
  m.attr("DTYPES") = dtypes;
  m.attr("MIN_CHUNK_ELEMS") = nz::kMinChunkElems;
  m.attr("MAX_CHUNK_ELEMS") = nz::kMaxChunkElems;
  m.attr("LANES") = nz::kLanes;
  py::dict err;
  const std::pair<const char*, nz::Err> bits[] = {
      {"header", nz::kErrHeader}, {"mismatch", nz::kErrMismatch}, {"index", nz::kErrIndex},
      {"chunk", nz::kErrChunk},   {"table", nz::kErrTable},       {"stream", nz::kErrStream},
      {"norm", nz::kErrNorm},     {"crc", nz::kErrCrc},           {"nan_lossy", nz::kErrNanLossy},
      {"slot", nz::kErrSlot},     {"overflow", nz::kErrOverflow}};
  for (const auto& [name, bit] : bits) err[name] = uint32_t(bit);
  m.attr("ERROR_BITS") = err;
#define NZ_FIELD(T, f)                               \
  {                                                  \
    #f, py::make_tuple(offsetof(T, f), sizeof(T::f)) \
  }
  using nz::gpu::DecodeJob;
  using nz::gpu::EncodeStatus;
  const std::pair<const char*, py::tuple> job[] = {
      NZ_FIELD(DecodeJob, src),   NZ_FIELD(DecodeJob, src_len),    NZ_FIELD(DecodeJob, dst),
      NZ_FIELD(DecodeJob, numel), NZ_FIELD(DecodeJob, first_item), NZ_FIELD(DecodeJob, grain),
      NZ_FIELD(DecodeJob, dtype), NZ_FIELD(DecodeJob, err),        NZ_FIELD(DecodeJob, flags)};
  const std::pair<const char*, py::tuple> status[] = {
      NZ_FIELD(EncodeStatus, total),       NZ_FIELD(EncodeStatus, header_bytes), NZ_FIELD(EncodeStatus, norm_bytes),
      NZ_FIELD(EncodeStatus, index_bytes), NZ_FIELD(EncodeStatus, mode),         NZ_FIELD(EncodeStatus, err),
      NZ_FIELD(EncodeStatus, crc)};
  py::dict job_layout, status_layout;
  for (const auto& [name, at] : job) job_layout[name] = at;
  for (const auto& [name, at] : status) status_layout[name] = at;
  m.attr("DECODE_JOB") = job_layout;
  m.attr("DECODE_JOB_BYTES") = sizeof(DecodeJob);
  py::dict job_flags;
  job_flags["slot"] = nz::gpu::kJobSlot;
  m.attr("DECODE_JOB_FLAGS") = job_flags;
  py::dict slot, kinds;
  kinds["payload"] = int(nz::kSlotPayload);
  kinds["raw"] = int(nz::kSlotRaw);
  kinds["overflow"] = int(nz::kSlotOverflow);
  slot["magic"] = py::bytes(reinterpret_cast<const char*>(&nz::kSlotMagic), 4);
  slot["header_bytes"] = nz::kSlotHeaderBytes;
  slot["kinds"] = kinds;
  m.attr("SLOT") = slot;
  m.attr("ENCODE_STATUS") = status_layout;
  m.attr("ENCODE_STATUS_BYTES") = sizeof(EncodeStatus);
#undef NZ_FIELD
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "nzdist CPU codec (csrc/FORMAT.md)";
  add_constants(m);
  // FormatError is defined in Python (nzdist.codec.errors) so it can be caught without importing the extension.
  g_format_error = py::object(py::module_::import("nzdist.codec.errors").attr("FormatError")).release().ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nz::FormatError& e) {
      PyErr_SetString(g_format_error, e.what());
    }
  });

  py::class_<nz::Encoded>(m, "Encoded")
      .def_property_readonly("nbytes", &nz::Encoded::nbytes)
      .def(
          "write",
          [](const nz::Encoded& e, uintptr_t dst, int threads) {
            py::gil_scoped_release nogil;
            e.write(reinterpret_cast<uint8_t*>(dst), threads);
          },
          py::arg("dst_ptr"), py::arg("threads") = 0);

  m.def(
      "encode",
      [](uintptr_t src, uint64_t numel, std::vector<int64_t> shape, int dtype, int keep_bits, uint32_t block_size,
         uint32_t chunk_elems, int threads) {
        nz::EncodeParams p;
        p.dtype = uint8_t(dtype);
        p.keep_bits = keep_bits;
        p.block_size = block_size;
        p.chunk_elems = chunk_elems;
        py::gil_scoped_release nogil;
        return nz::encode(as_ptr(src), numel, shape.data(), int(shape.size()), p, threads);
      },
      py::arg("src_ptr"), py::arg("numel"), py::arg("shape"), py::arg("dtype"), py::arg("keep_bits"),
      py::arg("block_size"), py::arg("chunk_elems"), py::arg("threads") = 0,
      "Encode numel elements at src_ptr; returns an Encoded whose write(dst_ptr) fills nbytes bytes.");

  m.def(
      "decode",
      [](uintptr_t src, uint64_t len, uintptr_t dst, uint64_t dst_bytes, int threads) {
        py::gil_scoped_release nogil;
        nz::decode(as_ptr(src), len, reinterpret_cast<void*>(dst), dst_bytes, threads);
      },
      py::arg("src_ptr"), py::arg("src_len"), py::arg("dst_ptr"), py::arg("dst_bytes"), py::arg("threads") = 0);

  m.def(
      "decode_batch",
      [](const std::vector<std::tuple<uintptr_t, uint64_t, uintptr_t, uint64_t>>& jobs, int threads) {
        std::vector<nz::DecodeJob> js;
        js.reserve(jobs.size());
        for (auto& [s, l, d, b] : jobs) js.push_back({as_ptr(s), l, reinterpret_cast<void*>(d), b});
        py::gil_scoped_release nogil;
        nz::decode_batch(js, threads);
      },
      py::arg("jobs"), py::arg("threads") = 0, "jobs: [(src_ptr, src_len, dst_ptr, dst_bytes)], decoded in one pass");

  m.def(
      "decode_jobs",
      [](uintptr_t table, uint64_t n_jobs, int threads) {
        py::gil_scoped_release nogil;
        nz::decode_jobs(reinterpret_cast<const nz::gpu::DecodeJob*>(table), n_jobs, threads);
      },
      py::arg("table_ptr"), py::arg("n_jobs"), py::arg("threads") = 0,
      "n_jobs DecodeJob records (DECODE_JOB layout, host addresses) at table_ptr; errors go to their error words");

  m.def(
      "parse_header", [](uintptr_t src, uint64_t len) { return header_dict(nz::parse_header(as_ptr(src), len)); },
      py::arg("src_ptr"), py::arg("src_len"));

  m.def("max_encoded_bytes",
        [](uint64_t numel, int ndim, int dtype, int keep_bits, uint32_t block_size, uint32_t chunk_elems) {
          nz::EncodeParams p;
          p.dtype = uint8_t(dtype);
          p.keep_bits = keep_bits;
          p.block_size = block_size;
          p.chunk_elems = chunk_elems;
          return nz::max_encoded_bytes(numel, ndim, p);
        });

  m.def(
      "default_chunk_elems", [](int dtype) { return nz::default_chunk_elems(uint8_t(dtype)); }, py::arg("dtype"),
      "elements per chunk when a codec config leaves chunk_elems unset (csrc/format.h)");

  m.def(
      "remainder_split",
      [](uintptr_t x, uintptr_t hi, uint64_t n, uintptr_t lo, uintptr_t index, uintptr_t upper, uint64_t room,
         int threads) {
        py::gil_scoped_release nogil;
        return nz::remainder_split(reinterpret_cast<const uint32_t*>(x), reinterpret_cast<const uint16_t*>(hi), n,
                                   reinterpret_cast<uint16_t*>(lo), reinterpret_cast<int64_t*>(index),
                                   reinterpret_cast<uint16_t*>(upper), room, threads);
      },
      py::arg("x_ptr"), py::arg("hi_ptr"), py::arg("n"), py::arg("lo_ptr"), py::arg("index_ptr"), py::arg("upper_ptr"),
      py::arg("room"), py::arg("threads") = 0, "fsdp/remainder.py's split of host shards in one pass; the count");

  m.def(
      "remainder_join",
      [](uintptr_t hi, uintptr_t lo, uintptr_t index, uintptr_t upper, uint64_t room, uint64_t n, uintptr_t out,
         int threads) {
        py::gil_scoped_release nogil;
        nz::remainder_join(reinterpret_cast<const uint16_t*>(hi), reinterpret_cast<const uint16_t*>(lo),
                           reinterpret_cast<const int64_t*>(index), reinterpret_cast<const uint16_t*>(upper), room, n,
                           reinterpret_cast<uint32_t*>(out), threads);
      },
      py::arg("hi_ptr"), py::arg("lo_ptr"), py::arg("index_ptr"), py::arg("upper_ptr"), py::arg("room"), py::arg("n"),
      py::arg("out_ptr"), py::arg("threads") = 0, "fsdp/remainder.py's join into host memory in one pass");

  m.def(
      "advise_huge_pages", [](uintptr_t p, uint64_t n) { return nz::advise_huge_pages(reinterpret_cast<void*>(p), n); },
      py::arg("ptr"), py::arg("nbytes"), "madvise(MADV_HUGEPAGE) on the buffer's whole 2 MiB pages; bytes advised");

  m.def(
      "crc32c",
      [](uintptr_t src, uint64_t len, uint32_t crc) {
        py::gil_scoped_release nogil;
        return nz::crc32c(as_ptr(src), len, crc);
      },
      py::arg("src_ptr"), py::arg("len"), py::arg("crc") = 0);

  m.def("_decoders", &nz::available_decoders, "chunk decoders in this build: scalar, avx2, avx512");
  m.def("_set_decoder", &nz::set_decoder, "testing/benchmarks: force a chunk decoder ('auto' = fastest)");
  m.def("_encoders", &nz::available_encoders, "chunk encoders in this build: scalar, avx2");
  m.def("_set_encoder", &nz::set_encoder, "testing/benchmarks: force a chunk encoder ('auto' = fastest)");
  m.def("_encoder_self_check", &nz::encoder_self_check, "tests: mismatches of the SIMD encoder's arithmetic (0)");
  m.def("set_num_threads", &nz::set_default_threads);
  m.def("get_num_threads", &nz::default_threads);
}
