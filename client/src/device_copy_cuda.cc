// device_copy.h with the CUDA runtime. Host code only: compiled by the C++
// compiler, linked with cudart.
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "device_copy.h"

namespace holdfast::client::internal {
namespace {

Status CudaError(cudaError_t err, const std::string& what) {
  return Status::Internal(what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                          ")");
}

int DeviceCount() {
  static const int count = [] {
    int n = 0;
    // Without a GPU (or driver) this fails, e.g. cudaErrorNoDevice or
    // cudaErrorInsufficientDriver: no devices.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky error
      return 0;
    }
    return n;
  }();
  return count;
}

// One stream and one event per device, created on first use, kept for the
// life of the process.
struct DeviceQueue {
  cudaStream_t stream = nullptr;
  cudaEvent_t done = nullptr;
};

class Queues {
 public:
  Result<DeviceQueue> For(int device) {
    std::lock_guard lock(mu_);
    if (auto it = queues_.find(device); it != queues_.end()) return it->second;
    if (device < 0 || device >= DeviceCount()) {
      return Status::InvalidArgument("CUDA device " + std::to_string(device) + " does not exist (" +
                                     std::to_string(DeviceCount()) + " present)");
    }
    DeviceQueue q;
    if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
      return CudaError(e, "cudaSetDevice(" + std::to_string(device) + ")");
    }
    if (cudaError_t e = cudaStreamCreateWithFlags(&q.stream, cudaStreamNonBlocking);
        e != cudaSuccess) {
      return CudaError(e, "cudaStreamCreateWithFlags");
    }
    if (cudaError_t e = cudaEventCreateWithFlags(&q.done, cudaEventDisableTiming);
        e != cudaSuccess) {
      cudaStreamDestroy(q.stream);
      return CudaError(e, "cudaEventCreateWithFlags");
    }
    queues_[device] = q;
    return q;
  }

 private:
  std::mutex mu_;
  std::map<int, DeviceQueue> queues_;
};

Queues& AllQueues() {
  static Queues* queues = new Queues();  // never destroyed: streams outlive static teardown
  return *queues;
}

// Enqueues every copy on its device's stream, records one event per device
// and waits for all of them. The calling thread's current device is restored.
Status Copy(std::span<const DeviceCopy> copies, cudaMemcpyKind kind) {
  int previous = 0;
  const bool restore_device = cudaGetDevice(&previous) == cudaSuccess;
  std::map<int, DeviceQueue> used;
  Status status;
  for (const DeviceCopy& c : copies) {
    if (c.bytes == 0) continue;
    auto q = AllQueues().For(c.device_index);
    if (!q.ok()) {
      status = q.status();
      break;
    }
    if (cudaError_t e = cudaSetDevice(c.device_index); e != cudaSuccess) {
      status = CudaError(e, "cudaSetDevice");
      break;
    }
    if (cudaError_t e = cudaMemcpyAsync(c.dst, c.src, c.bytes, kind, q->stream);
        e != cudaSuccess) {
      status = CudaError(e, "cudaMemcpyAsync");
      break;
    }
    used[c.device_index] = *q;
  }
  // Wait for whatever was enqueued, even after an error, so that no copy is
  // still running when the caller reuses the memory.
  for (const auto& [device, q] : used) {
    cudaSetDevice(device);
    cudaError_t e = cudaEventRecord(q.done, q.stream);
    if (e == cudaSuccess) e = cudaEventSynchronize(q.done);
    if (e != cudaSuccess && status.ok()) status = CudaError(e, "waiting for the copy stream");
  }
  if (restore_device) cudaSetDevice(previous);
  return status;
}

}  // namespace

bool CudaAvailable() { return DeviceCount() > 0; }

Status RegisterHost(void* p, uint64_t bytes) {
  if (!CudaAvailable()) return Status::FailedPrecondition("no CUDA device");
  if (cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterPortable); e != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaError(e, "cudaHostRegister");
  }
  return Status::Ok();
}

void UnregisterHost(void* p) {
  if (cudaHostUnregister(p) != cudaSuccess) (void)cudaGetLastError();
}

Status CopyDeviceToHost(std::span<const DeviceCopy> copies) {
  if (!CudaAvailable()) {
    return Status::FailedPrecondition("CUDA item, but no CUDA device is present in this process");
  }
  return Copy(copies, cudaMemcpyDeviceToHost);
}

Status CopyHostToDevice(std::span<const DeviceCopy> copies) {
  if (!CudaAvailable()) {
    return Status::FailedPrecondition("CUDA target, but no CUDA device is present in this process");
  }
  return Copy(copies, cudaMemcpyHostToDevice);
}

}  // namespace holdfast::client::internal
