// ringattn._core: the compiled half of the Python package. A thin pybind11 layer over the C ABI
// (ringattn.h, ringattn_ring.h, ringattn_mpi.h) that knows nothing about torch: a tensor arrives
// as a tuple (data pointer, dtype code, shape, strides) and a stream as an integer, so one build
// serves every torch version (and any other array library). Every call into the library releases
// the GIL; a failed call raises ringattn.RingAttnError with the status name and the library's
// message.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ringattn/ringattn.h"
#include "ringattn/ringattn_ring.h"
#ifdef RINGATTN_PY_HAVE_MPI
#include "ringattn/ringattn_mpi.h"  // defines OMPI_SKIP_MPICXX before mpi.h
#endif
#ifdef RINGATTN_PY_HAVE_NCCL
#include <cuda_runtime.h>

#include <cstring>

#include "ringattn/ringattn_nccl.h"
#endif

namespace py = pybind11;

namespace {

// A failed C call, turned into ringattn.RingAttnError by the translator below.
struct CallError {
  ringattn_status_t status;
  std::string message;
};

PyObject* g_error_type = nullptr;  // ringattn._core.RingAttnError

std::string status_name(ringattn_status_t status) {
  const std::string s = ringattn_status_string(status);
  const size_t colon = s.find(':');
  return colon == std::string::npos ? s : s.substr(0, colon);
}

// Raises for a status other than success, with the message the failing call left on this thread
// (read before anything else can call the library).
void check(ringattn_status_t status) {
  if (status != RINGATTN_SUCCESS) throw CallError{status, ringattn_get_last_error()};
}

// (ptr, dtype, shape, strides) -> descriptor. Shapes and strides of up to 4 dimensions.
ringattn_tensor_t to_desc(const py::handle& obj, const char* name) {
  auto t = py::reinterpret_borrow<py::tuple>(obj);
  if (t.size() != 4) {
    throw py::value_error(std::string(name) + ": expected (ptr, dtype, shape, strides)");
  }
  ringattn_tensor_t d{};
  d.data = reinterpret_cast<void*>(t[0].cast<uintptr_t>());
  d.dtype = static_cast<ringattn_dtype_t>(t[1].cast<int>());
  const auto shape = t[2].cast<std::vector<int64_t>>();
  const auto strides = t[3].cast<std::vector<int64_t>>();
  if (shape.size() != strides.size() || shape.empty() || shape.size() > 4) {
    throw py::value_error(std::string(name) + ": shape and strides need 1..4 equal dimensions");
  }
  d.ndim = static_cast<int32_t>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    d.shape[i] = shape[i];
    d.strides[i] = strides[i];
  }
  return d;
}

// Attention options with the cu_seqlens they point into.
struct Params {
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  std::vector<int64_t> cu;
};

Params make_params(bool causal, int64_t window_left, int64_t window_right, double scale, int scheme,
                   const std::optional<std::vector<int64_t>>& cu_seqlens, int local_kernel = 0) {
  Params out;
  out.p.local_kernel = static_cast<ringattn_local_kernel_t>(local_kernel);
  out.p.causal = causal ? 1 : 0;
  out.p.window_left = window_left;
  out.p.window_right = window_right;
  out.p.softmax_scale = static_cast<float>(scale);
  out.p.scheme = static_cast<ringattn_scheme_t>(scheme);
  if (cu_seqlens) {
    out.cu = *cu_seqlens;
    if (out.cu.empty()) throw py::value_error("cu_seqlens needs at least one offset");
    out.p.num_seqs = static_cast<int64_t>(out.cu.size()) - 1;
  }
  out.p.cu_seqlens = out.cu.empty() ? nullptr : out.cu.data();
  return out;
}

void* as_stream(uintptr_t stream) { return reinterpret_cast<void*>(stream); }

// A ring context owned by Python; destroyed explicitly (close) or with the object.
class Context {
 public:
  explicit Context(ringattn_context_t ctx) : ctx_(ctx) {}
  ~Context() { close(); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  void close() {
    if (ctx_ != nullptr) ringattn_context_destroy(ctx_);
    ctx_ = nullptr;
#ifdef RINGATTN_PY_HAVE_NCCL
    // The communicator this module made for the context (from_nccl_unique_id): after the
    // context, once its device work is done. Aborted rather than destroyed, since after a
    // timeout or a communication error the library leaves a caller's communicator to be aborted.
    if (nccl_comm_ != nullptr) {
      cudaDeviceSynchronize();
      ncclCommAbort(nccl_comm_);
      nccl_comm_ = nullptr;
    }
#endif
  }
#ifdef RINGATTN_PY_HAVE_NCCL
  ncclComm_t nccl_comm_ = nullptr;  // owned, or null
#endif
  ringattn_context_t get() const {
    if (ctx_ == nullptr) throw py::value_error("the ring context is closed");
    return ctx_;
  }
  std::pair<int, int> rank_world() const {
    int32_t rank = 0, world = 0;
    check(ringattn_context_rank(get(), &rank, &world));
    return {rank, world};
  }

 private:
  ringattn_context_t ctx_ = nullptr;
};

// A plan over a context (which it keeps alive); runs do no agreement and allocate nothing.
class Plan {
 public:
  Plan(std::shared_ptr<Context> ctx, ringattn_ring_plan_t plan, Params params)
      : ctx_(std::move(ctx)), plan_(plan), params_(std::move(params)) {}
  ~Plan() { close(); }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  void close() {
    if (plan_ != nullptr) ringattn_ring_plan_destroy(plan_);
    plan_ = nullptr;
  }
  ringattn_ring_plan_t get() const {
    if (plan_ == nullptr) throw py::value_error("the ring plan is closed");
    return plan_;
  }

 private:
  std::shared_ptr<Context> ctx_;  // the context must outlive the plan
  ringattn_ring_plan_t plan_ = nullptr;
  Params params_;  // the plan copies cu_seqlens; kept for symmetry with calls
};

// Context options: the defaults, with what the Python layer passes.
ringattn_context_options_t context_options(int64_t timeout_ms, int chunks, int ulysses_degree,
                                           int placement) {
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.timeout_ms = timeout_ms;
  opts.chunks = chunks;
  opts.ulysses_degree = ulysses_degree;
  opts.placement = placement;
  return opts;
}

std::shared_ptr<Context> context_from_mpi_f(int64_t fortran_comm, int backend, int64_t timeout_ms,
                                            int chunks, bool nccl, int ulysses_degree,
                                            int placement) {
#ifdef RINGATTN_PY_HAVE_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw py::value_error("MPI is not initialized (import mpi4py.MPI first)");
  const ringattn_context_options_t opts =
      context_options(timeout_ms, chunks, ulysses_degree, placement);
  ringattn_context_t ctx = nullptr;
  ringattn_status_t st;
  {
    py::gil_scoped_release release;
    // py2f gives the Fortran handle of any MPI's communicator; f2c turns it into this MPI's
    // MPI_Comm without mpi4py's headers.
    MPI_Comm comm = MPI_Comm_f2c(static_cast<MPI_Fint>(fortran_comm));
    const auto b = static_cast<ringattn_backend_t>(backend);
    st = nccl ? ringattn_context_create_nccl_mpi(comm, b, &opts, &ctx)
              : ringattn_context_create(comm, b, &opts, &ctx);
  }
  check(st);
  return std::make_shared<Context>(ctx);
#else
  (void)fortran_comm, (void)backend, (void)timeout_ms, (void)chunks, (void)nccl;
  (void)ulysses_degree, (void)placement;
  throw CallError{RINGATTN_ERROR_UNSUPPORTED,
                  "ringattn._core was built without MPI: RingGroup.from_mpi is unavailable"};
#endif
}

std::shared_ptr<Context> context_compute_only(int rank, int world, int backend, int64_t timeout_ms,
                                              int chunks) {
  const ringattn_context_options_t opts = context_options(timeout_ms, chunks, 1, 0);
  ringattn_context_t ctx = nullptr;
  check(ringattn_context_create_compute_only(rank, world, static_cast<ringattn_backend_t>(backend),
                                             &opts, &ctx));
  return std::make_shared<Context>(ctx);
}

#ifdef RINGATTN_PY_HAVE_NCCL
void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) {
    throw CallError{RINGATTN_ERROR_COMM, std::string(what) + " failed: " + ncclGetErrorString(r)};
  }
}

py::bytes nccl_unique_id() {
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  return py::bytes(id.internal, sizeof(id.internal));
}

// Collective over the `world` ranks that got the same id (rank 0's, broadcast by the caller): an
// NCCL communicator of this module's own on `device`, and a ring context over it (no MPI).
std::shared_ptr<Context> context_from_nccl_unique_id(py::bytes uid, int rank, int world, int device,
                                                     int64_t timeout_ms, int chunks,
                                                     int ulysses_degree, int placement) {
  const std::string raw = uid;
  ncclUniqueId id;
  if (raw.size() != sizeof(id.internal)) throw py::value_error("not an NCCL unique id");
  std::memcpy(id.internal, raw.data(), sizeof(id.internal));
  const ringattn_context_options_t opts =
      context_options(timeout_ms, chunks, ulysses_degree, placement);
  ncclComm_t comm = nullptr;
  ringattn_context_t ctx = nullptr;
  ncclResult_t nr;
  ringattn_status_t st = RINGATTN_SUCCESS;
  {
    py::gil_scoped_release release;
    cudaSetDevice(device);
    nr = ncclCommInitRank(&comm, world, id, rank);
    if (nr == ncclSuccess) {
      st = ringattn_context_create_nccl(comm, rank, world, RINGATTN_BACKEND_CUDA, &opts, &ctx);
    }
  }
  check_nccl(nr, "ncclCommInitRank");
  if (st != RINGATTN_SUCCESS) {
    const std::string msg = ringattn_get_last_error();
    ncclCommAbort(comm);
    throw CallError{st, msg};
  }
  auto out = std::make_shared<Context>(ctx);
  out->nccl_comm_ = comm;
  return out;
}
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ringattn compiled core: the C ABI over (ptr, dtype, shape, strides) tuples";

  // Leaked on purpose: the type lives as long as the interpreter (no destructor at exit).
  g_error_type = (new py::exception<CallError>(m, "RingAttnError", PyExc_RuntimeError))->ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CallError& e) {
      const std::string name = status_name(e.status);
      const std::string text = name + ": " + e.message;
      py::object exc = py::reinterpret_borrow<py::object>(g_error_type)(text);
      exc.attr("status") = name;
      exc.attr("code") = static_cast<int>(e.status);
      exc.attr("message") = e.message;
      PyErr_SetObject(g_error_type, exc.ptr());
    }
  });

  m.attr("FLOAT32") = static_cast<int>(RINGATTN_FLOAT32);
  m.attr("FLOAT16") = static_cast<int>(RINGATTN_FLOAT16);
  m.attr("BFLOAT16") = static_cast<int>(RINGATTN_BFLOAT16);
  m.attr("BACKEND_CPU") = static_cast<int>(RINGATTN_BACKEND_CPU);
  m.attr("BACKEND_CUDA") = static_cast<int>(RINGATTN_BACKEND_CUDA);
  m.attr("SCHEME_CONTIGUOUS") = static_cast<int>(RINGATTN_SCHEME_CONTIGUOUS);
  m.attr("SCHEME_ZIGZAG") = static_cast<int>(RINGATTN_SCHEME_ZIGZAG);
  m.attr("SCHEME_STRIPED") = static_cast<int>(RINGATTN_SCHEME_STRIPED);
#ifdef RINGATTN_PY_HAVE_MPI
  m.attr("HAVE_MPI") = true;
#else
  m.attr("HAVE_MPI") = false;
#endif
#ifdef RINGATTN_PY_HAVE_NCCL
  m.attr("HAVE_NCCL") = true;
  m.def("nccl_unique_id", &nccl_unique_id, "A new NCCL unique id (bytes), for rank 0 to broadcast");
#else
  m.attr("HAVE_NCCL") = false;
#endif

  m.def("version", &ringattn_get_version);
  m.def("backend_available", [](int backend) {
    return ringattn_backend_available(static_cast<ringattn_backend_t>(backend)) != 0;
  });
  m.def("status_string", [](int status) {
    return std::string(ringattn_status_string(static_cast<ringattn_status_t>(status)));
  });

  // ---- sharding helpers ----
  m.def("shard_length", [](int scheme, int64_t seq_len, int world, int rank) {
    int64_t n = 0;
    check(ringattn_shard_length(static_cast<ringattn_scheme_t>(scheme), seq_len, world, rank, &n));
    return n;
  });
  m.def("shard_positions", [](int scheme, int64_t seq_len, int world, int rank) {
    int64_t n = 0;
    const auto s = static_cast<ringattn_scheme_t>(scheme);
    check(ringattn_shard_length(s, seq_len, world, rank, &n));
    std::vector<int64_t> pos(static_cast<size_t>(n));
    check(ringattn_shard_positions(s, seq_len, world, rank, pos.data(), n));
    return pos;
  });

  // ---- single-process attention ----
  m.def(
      "attention_forward",
      [](py::tuple q, py::tuple k, py::tuple v, py::tuple o, py::object lse, bool causal,
         int64_t wl, int64_t wr, double scale, std::optional<std::vector<int64_t>> cu, int backend,
         uintptr_t stream) {
        auto dq = to_desc(q, "q"), dk = to_desc(k, "k"), dv = to_desc(v, "v");
        auto dout = to_desc(o, "o");
        ringattn_tensor_t dl{};
        const bool has_lse = !lse.is_none();
        if (has_lse) dl = to_desc(lse, "lse");
        const Params p = make_params(causal, wl, wr, scale, /*scheme=*/0, cu);
        ringattn_status_t st;
        {
          py::gil_scoped_release release;
          st = ringattn_attention_forward(&dq, &dk, &dv, &dout, has_lse ? &dl : nullptr, &p.p,
                                          static_cast<ringattn_backend_t>(backend),
                                          as_stream(stream));
        }
        check(st);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("causal"),
      py::arg("window_left"), py::arg("window_right"), py::arg("softmax_scale"),
      py::arg("cu_seqlens"), py::arg("backend"), py::arg("stream"));

  m.def(
      "attention_backward",
      [](py::tuple q, py::tuple k, py::tuple v, py::tuple o, py::tuple lse, py::tuple dout,
         py::tuple dq, py::tuple dk, py::tuple dv, bool causal, int64_t wl, int64_t wr,
         double scale, std::optional<std::vector<int64_t>> cu, int backend, uintptr_t stream) {
        auto tq = to_desc(q, "q"), tk = to_desc(k, "k"), tv = to_desc(v, "v");
        auto to = to_desc(o, "o"), tl = to_desc(lse, "lse"), tdo = to_desc(dout, "dout");
        auto tdq = to_desc(dq, "dq"), tdk = to_desc(dk, "dk"), tdv = to_desc(dv, "dv");
        const Params p = make_params(causal, wl, wr, scale, 0, cu);
        ringattn_status_t st;
        {
          py::gil_scoped_release release;
          st = ringattn_attention_backward(&tq, &tk, &tv, &to, &tl, &tdo, &tdq, &tdk, &tdv, &p.p,
                                           static_cast<ringattn_backend_t>(backend),
                                           as_stream(stream));
        }
        check(st);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("dout"),
      py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("causal"), py::arg("window_left"),
      py::arg("window_right"), py::arg("softmax_scale"), py::arg("cu_seqlens"), py::arg("backend"),
      py::arg("stream"));

  // ---- ring contexts and plans ----
  py::class_<Context, std::shared_ptr<Context>>(m, "Context")
      .def_static("from_mpi_fortran", &context_from_mpi_f, py::arg("fortran_comm"),
                  py::arg("backend"), py::arg("timeout_ms") = 0, py::arg("chunks") = 0,
                  py::arg("nccl") = false, py::arg("ulysses_degree") = 1, py::arg("placement") = 0,
                  "Collective: a context over an MPI communicator given by its Fortran handle "
                  "(mpi4py: comm.py2f()); nccl=True moves device buffers over NCCL bootstrapped "
                  "over MPI")
#ifdef RINGATTN_PY_HAVE_NCCL
      .def_static("from_nccl_unique_id", &context_from_nccl_unique_id, py::arg("unique_id"),
                  py::arg("rank"), py::arg("world"), py::arg("device"), py::arg("timeout_ms") = 0,
                  py::arg("chunks") = 0, py::arg("ulysses_degree") = 1, py::arg("placement") = 0,
                  "Collective: an NCCL communicator of its own from rank 0's unique id, and a "
                  "CUDA ring context over it (no MPI)")
#endif
      .def_static("compute_only", &context_compute_only, py::arg("rank"), py::arg("world"),
                  py::arg("backend"), py::arg("timeout_ms") = 0, py::arg("chunks") = 0)
      .def("close", &Context::close)
      .def_property_readonly("rank", [](const Context& c) { return c.rank_world().first; })
      .def_property_readonly("world", [](const Context& c) { return c.rank_world().second; })
      .def("workspace_size",
           [](const Context& c) {
             size_t bytes = 0;
             check(ringattn_context_workspace_size(c.get(), &bytes));
             return bytes;
           })
      .def("last_stats",
           [](const Context& c) {
             ringattn_ring_stats_t s{};
             check(ringattn_context_last_stats(c.get(), &s));
             py::dict d;
             d["total_seconds"] = s.total_seconds;
             d["compute_seconds"] = s.compute_seconds;
             d["comm_wait_seconds"] = s.comm_wait_seconds;
             d["bytes_sent"] = s.bytes_sent;
             d["steps"] = s.steps;
             d["steps_skipped"] = s.steps_skipped;
             d["device_compute_seconds"] = s.device_compute_seconds;
             return d;
           })
      .def(
          "forward",
          [](const Context& c, py::tuple q, py::tuple k, py::tuple v, py::tuple o, py::object lse,
             bool causal, int64_t wl, int64_t wr, double scale, int scheme,
             std::optional<std::vector<int64_t>> cu, uintptr_t stream, int local_kernel) {
            auto tq = to_desc(q, "q"), tk = to_desc(k, "k"), tv = to_desc(v, "v");
            auto to = to_desc(o, "o");
            ringattn_tensor_t tl{};
            const bool has_lse = !lse.is_none();
            if (has_lse) tl = to_desc(lse, "lse");
            const Params p = make_params(causal, wl, wr, scale, scheme, cu, local_kernel);
            ringattn_context_t ctx = c.get();
            ringattn_status_t st;
            {
              py::gil_scoped_release release;
              st = ringattn_ring_forward(ctx, &tq, &tk, &tv, &to, has_lse ? &tl : nullptr, &p.p,
                                         as_stream(stream));
            }
            check(st);
          },
          py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("causal"),
          py::arg("window_left"), py::arg("window_right"), py::arg("softmax_scale"),
          py::arg("scheme"), py::arg("cu_seqlens"), py::arg("stream"), py::arg("local_kernel") = 0)
      .def(
          "backward",
          [](const Context& c, py::tuple q, py::tuple k, py::tuple v, py::tuple o, py::tuple lse,
             py::tuple dout, py::tuple dq, py::tuple dk, py::tuple dv, bool causal, int64_t wl,
             int64_t wr, double scale, int scheme, std::optional<std::vector<int64_t>> cu,
             uintptr_t stream, int local_kernel) {
            auto tq = to_desc(q, "q"), tk = to_desc(k, "k"), tv = to_desc(v, "v");
            auto to = to_desc(o, "o"), tl = to_desc(lse, "lse"), tdo = to_desc(dout, "dout");
            auto tdq = to_desc(dq, "dq"), tdk = to_desc(dk, "dk"), tdv = to_desc(dv, "dv");
            const Params p = make_params(causal, wl, wr, scale, scheme, cu, local_kernel);
            ringattn_context_t ctx = c.get();
            ringattn_status_t st;
            {
              py::gil_scoped_release release;
              st = ringattn_ring_backward(ctx, &tq, &tk, &tv, &to, &tl, &tdo, &tdq, &tdk, &tdv,
                                          &p.p, as_stream(stream));
            }
            check(st);
          },
          py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("dout"),
          py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("causal"), py::arg("window_left"),
          py::arg("window_right"), py::arg("softmax_scale"), py::arg("scheme"),
          py::arg("cu_seqlens"), py::arg("stream"), py::arg("local_kernel") = 0)
      .def(
          "plan",
          [](std::shared_ptr<Context> c, py::tuple q, py::tuple k, py::tuple v, bool causal,
             int64_t wl, int64_t wr, double scale, int scheme,
             std::optional<std::vector<int64_t>> cu, int local_kernel) {
            auto tq = to_desc(q, "q"), tk = to_desc(k, "k"), tv = to_desc(v, "v");
            Params p = make_params(causal, wl, wr, scale, scheme, cu, local_kernel);
            ringattn_context_t ctx = c->get();
            ringattn_ring_plan_t plan = nullptr;
            ringattn_status_t st;
            {
              py::gil_scoped_release release;
              st = ringattn_ring_plan_create(ctx, &tq, &tk, &tv, &p.p, /*own_workspace=*/1, &plan);
            }
            check(st);
            return std::make_shared<Plan>(std::move(c), plan, std::move(p));
          },
          py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal"), py::arg("window_left"),
          py::arg("window_right"), py::arg("softmax_scale"), py::arg("scheme"),
          py::arg("cu_seqlens"), py::arg("local_kernel") = 0,
          "Collective: a plan for this problem (agreed once; runs do no agreement and use the "
          "plan's own workspace)");

  py::class_<Plan, std::shared_ptr<Plan>>(m, "Plan")
      .def("close", &Plan::close)
      .def(
          "forward",
          [](const Plan& pl, py::tuple q, py::tuple k, py::tuple v, py::tuple o, py::tuple lse,
             uintptr_t stream) {
            auto tq = to_desc(q, "q"), tk = to_desc(k, "k"), tv = to_desc(v, "v");
            auto to = to_desc(o, "o"), tl = to_desc(lse, "lse");
            ringattn_ring_plan_t plan = pl.get();
            ringattn_status_t st;
            {
              py::gil_scoped_release release;
              st = ringattn_ring_plan_forward(plan, &tq, &tk, &tv, &to, &tl, nullptr, 0,
                                              as_stream(stream));
            }
            check(st);
          },
          py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("stream"))
      .def(
          "backward",
          [](const Plan& pl, py::tuple q, py::tuple k, py::tuple v, py::tuple o, py::tuple lse,
             py::tuple dout, py::tuple dq, py::tuple dk, py::tuple dv, uintptr_t stream) {
            auto tq = to_desc(q, "q"), tk = to_desc(k, "k"), tv = to_desc(v, "v");
            auto to = to_desc(o, "o"), tl = to_desc(lse, "lse"), tdo = to_desc(dout, "dout");
            auto tdq = to_desc(dq, "dq"), tdk = to_desc(dk, "dk"), tdv = to_desc(dv, "dv");
            ringattn_ring_plan_t plan = pl.get();
            ringattn_status_t st;
            {
              py::gil_scoped_release release;
              st = ringattn_ring_plan_backward(plan, &tq, &tk, &tv, &to, &tl, &tdo, &tdq, &tdk,
                                               &tdv, nullptr, 0, as_stream(stream));
            }
            check(st);
          },
          py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("dout"),
          py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("stream"));
}
