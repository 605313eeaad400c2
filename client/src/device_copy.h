// Device <-> host copies for CUDA items.
//
// Two builds of one interface: device_copy_cuda.cc (when the CUDA Toolkit is
// found; it links cudart and needs no nvcc-compiled kernels) and
// device_copy_none.cc (every call fails with FAILED_PRECONDITION). A machine
// without a GPU runs the CUDA build too: Available() is false there and the
// CPU path never calls into CUDA.
//
// Copies run on one non-blocking stream per device, owned by the library,
// and end with an event the caller's thread waits on; the trainer's own
// streams are never synchronized. Host memory registered with RegisterHost
// (the daemon's segments) is page-locked, so a device-to-host copy lands in
// shared memory at PCIe speed with no bounce buffer.
#ifndef HOLDFAST_CLIENT_SRC_DEVICE_COPY_H_
#define HOLDFAST_CLIENT_SRC_DEVICE_COPY_H_

#include <cstdint>
#include <span>

#include "holdfast/ec/status.h"

namespace holdfast::client::internal {

struct DeviceCopy {
  void* dst = nullptr;
  const void* src = nullptr;
  uint64_t bytes = 0;
  int device_index = 0;  // the device whose memory is src (to host) or dst (to device)
};

// True when built with CUDA and at least one device is usable.
bool CudaAvailable();

// Page-locks [p, p + bytes) for the devices (cudaHostRegister). Failure only
// costs speed: copies to unregistered memory still work.
Status RegisterHost(void* p, uint64_t bytes);
void UnregisterHost(void* p);

// Copies device memory to host memory and waits until every byte landed.
Status CopyDeviceToHost(std::span<const DeviceCopy> copies);
// Copies host memory to device memory and waits until every byte landed.
Status CopyHostToDevice(std::span<const DeviceCopy> copies);

}  // namespace holdfast::client::internal

#endif  // HOLDFAST_CLIENT_SRC_DEVICE_COPY_H_
