// device_copy.h without CUDA: this build of libholdfast was configured
// without the CUDA Toolkit (or with -DHOLDFAST_CUDA=OFF).
#include "device_copy.h"

namespace holdfast::client::internal {
namespace {

Status NoCuda() {
  return Status::FailedPrecondition(
      "CUDA item, but libholdfast was built without CUDA support (configure with the CUDA Toolkit "
      "installed and -DHOLDFAST_CUDA=ON)");
}

}  // namespace

bool CudaAvailable() { return false; }
Status RegisterHost(void*, uint64_t) { return NoCuda(); }
void UnregisterHost(void*) {}
Status CopyDeviceToHost(std::span<const DeviceCopy>) { return NoCuda(); }
Status CopyHostToDevice(std::span<const DeviceCopy>) { return NoCuda(); }

}  // namespace holdfast::client::internal
