// holdfast._holdfast: the pybind11 binding of libholdfast's C++ Client, used
// by the `holdfast` Python package (client/python/holdfast/__init__.py).
//
// The binding moves no tensor bytes through Python: items and restore
// targets are (pointer, byte count) pairs taken from tensor.data_ptr(). The
// Python layer keeps the tensors alive until a snapshot is staged. Every call
// that can block (RPCs, copies, waits) releases the GIL. Errors raise
// holdfast.HoldfastError(code, code_name, message).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "holdfast/client/client.h"

namespace py = pybind11;

namespace holdfast::client {
namespace {

// Set by the module init: holdfast.HoldfastError.
PyObject* g_error_type = nullptr;

// Raises holdfast.HoldfastError for a failed status (with the GIL held).
[[noreturn]] void Raise(const Status& s) {
  py::object err = py::reinterpret_borrow<py::object>(g_error_type);
  PyErr_SetObject(g_error_type, err(static_cast<int>(s.code()), std::string(StatusCodeName(s.code())), s.message())
                                    .ptr());
  throw py::error_already_set();
}

void Check(const Status& s) {
  if (!s.ok()) Raise(s);
}

// Runs `f` with the GIL released and returns its result.
template <typename F>
auto WithoutGil(F&& f) {
  py::gil_scoped_release nogil;
  return f();
}

std::chrono::milliseconds Millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

py::dict StatsDict(const SaveStats& s) {
  py::dict d;
  d["step"] = s.step;
  d["bytes"] = s.bytes;
  d["version_complete"] = s.version_complete;
  d["queue_seconds"] = s.queue_seconds;
  d["begin_seconds"] = s.begin_seconds;
  d["copy_seconds"] = s.copy_seconds;
  d["commit_seconds"] = s.commit_seconds;
  d["daemon_verify_seconds"] = s.daemon_verify_seconds;
  d["copy_threads"] = s.copy_threads;
  return d;
}

// (name, dtype code, shape, data pointer, nbytes, device, device index)
using PyItem = std::tuple<std::string, int, std::vector<int64_t>, uintptr_t, uint64_t, int, int>;
// (name, data pointer, nbytes)
using PyTarget = std::tuple<std::string, uintptr_t, uint64_t>;

class PyHandle {
 public:
  explicit PyHandle(SnapshotHandle h) : h_(std::move(h)) {}

  int64_t step() const { return h_.step(); }
  bool staged() const { return h_.staged(); }
  bool done() const { return h_.done(); }

  // Returns False on timeout; raises the snapshot's error.
  bool WaitStaged(std::optional<double> timeout) {
    Status s;
    {
      py::gil_scoped_release nogil;
      s = timeout ? h_.WaitStagedFor(Millis(*timeout)) : h_.WaitStaged();
    }
    if (s.code() == StatusCode::kDeadlineExceeded && !h_.staged()) return false;
    Check(s);
    return true;
  }

  // Returns the statistics, None on timeout; raises the snapshot's error.
  py::object Wait(std::optional<double> timeout) {
    auto r = WithoutGil([&] { return timeout ? h_.WaitFor(Millis(*timeout)) : h_.Wait(); });
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kDeadlineExceeded && !h_.done()) return py::none();
      Raise(r.status());
    }
    return StatsDict(*r);
  }

  // Waits until staged, without raising (the destructor's job, for Python's
  // garbage collector, done with the GIL released).
  void Release() {
    py::gil_scoped_release nogil;
    h_ = SnapshotHandle();
  }

 private:
  SnapshotHandle h_;
};

class PyClient {
 public:
  PyClient(const std::string& endpoint, const std::string& job, int rank, int world_size,
           std::vector<int> local_ranks, int copy_threads, double rpc_timeout) {
    Options o;
    o.endpoint = endpoint;
    o.job_id = job;
    o.rank = rank;
    o.world_size = world_size;
    o.local_ranks = std::move(local_ranks);
    o.copy_threads = copy_threads;
    o.rpc_timeout = Millis(rpc_timeout);
    o.restore_resumes = true;  // the trainer's own client (holdfast.Snapshotter)
    auto c = WithoutGil([&] { return Client::Connect(o); });
    if (!c.ok()) Raise(c.status());
    client_ = std::move(c).value();
  }

  PyHandle SaveAsync(int64_t step, const std::vector<PyItem>& items) {
    std::vector<ItemView> views;
    views.reserve(items.size());
    for (const auto& [name, dtype, shape, ptr, nbytes, device, device_index] : items) {
      ItemView v;
      v.name = name;
      v.dtype = static_cast<DType>(dtype);
      v.shape = shape;
      v.data = reinterpret_cast<const void*>(ptr);
      v.nbytes = nbytes;
      v.device = static_cast<Device>(device);
      v.device_index = device_index;
      views.push_back(std::move(v));
    }
    return PyHandle(client().SaveAsync(step, views));
  }

  std::optional<int64_t> LatestStep() {
    Client& c = client();
    auto r = WithoutGil([&] { return c.LatestStep(); });
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  // [(name, dtype code, shape, nbytes)] of `step` (None: newest) and its step.
  py::tuple ListItems(std::optional<int64_t> step) {
    Client& c = client();
    auto r = WithoutGil([&] { return c.ListItems(step); });
    if (!r.ok()) Raise(r.status());
    py::list out;
    for (const ItemInfo& i : *r) {
      out.append(py::make_tuple(i.name, static_cast<int>(i.dtype), i.shape, i.nbytes));
    }
    return py::make_tuple(out);
  }

  // Restores the named items into the given memory; returns the step.
  int64_t Restore(std::optional<int64_t> step, const std::vector<PyTarget>& targets) {
    std::vector<RestoreTarget> ts;
    ts.reserve(targets.size());
    for (const auto& [name, ptr, nbytes] : targets) {
      ts.push_back({name, reinterpret_cast<void*>(ptr), nbytes});
    }
    Client& c = client();
    auto r = WithoutGil([&] { return c.Restore(step, ts); });
    if (!r.ok()) Raise(r.status());
    return r->step;
  }

  void Drop(std::optional<int64_t> step) {
    Status s;
    Client& c = client();
    {
      py::gil_scoped_release nogil;
      s = c.Drop(step);
    }
    Check(s);
  }

  int copy_threads() { return client().copy_threads(); }

  // Finishes the snapshots already asked for, then disconnects.
  void Close() {
    py::gil_scoped_release nogil;
    client_.reset();
  }

  Client& client() {
    if (!client_) Raise(Status::FailedPrecondition("the client is closed"));
    return *client_;
  }

 private:
  std::unique_ptr<Client> client_;
};

// PrepareFreshMemory without the GIL: a restore into new tensors otherwise
// pays a page fault per 4 KiB page.
void Prefault(uintptr_t ptr, uint64_t nbytes) {
  py::gil_scoped_release nogil;
  PrepareFreshMemory(reinterpret_cast<void*>(ptr), nbytes);
}

}  // namespace
}  // namespace holdfast::client

PYBIND11_MODULE(_holdfast, m) {
  using namespace holdfast::client;
  m.doc() = "libholdfast binding; use the holdfast package, not this module";

  // holdfast.HoldfastError(code, code_name, message), defined in Python so
  // that it pickles and subclasses like any exception.
  py::object errors = py::module_::import("holdfast._errors");
  g_error_type = errors.attr("HoldfastError").ptr();
  Py_INCREF(g_error_type);

  py::class_<PyHandle>(m, "Handle")
      .def_property_readonly("step", &PyHandle::step)
      .def("staged", &PyHandle::staged)
      .def("done", &PyHandle::done)
      .def("wait_staged", &PyHandle::WaitStaged, py::arg("timeout") = py::none())
      .def("wait", &PyHandle::Wait, py::arg("timeout") = py::none())
      .def("release", &PyHandle::Release);

  py::class_<PyClient>(m, "Client")
      .def(py::init<const std::string&, const std::string&, int, int, std::vector<int>, int,
                    double>(),
           py::arg("endpoint"), py::arg("job"), py::arg("rank"), py::arg("world_size"),
           py::arg("local_ranks"), py::arg("copy_threads") = 0, py::arg("rpc_timeout") = 60.0)
      .def("save_async", &PyClient::SaveAsync, py::arg("step"), py::arg("items"))
      .def("latest_step", &PyClient::LatestStep)
      .def("list_items", &PyClient::ListItems, py::arg("step") = py::none())
      .def("restore", &PyClient::Restore, py::arg("step"), py::arg("targets"))
      .def("drop", &PyClient::Drop, py::arg("step") = py::none())
      .def_property_readonly("copy_threads", &PyClient::copy_threads)
      .def("close", &PyClient::Close);

  m.def("prefault", &Prefault, py::arg("ptr"), py::arg("nbytes"));
  m.def("cuda_available", &Client::CudaAvailable);
}
