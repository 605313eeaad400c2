#include "core/items.h"

#include <string>
#include <unordered_set>

namespace holdfast::smp {

uint64_t DTypeSize(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_BOOL:
    case v1::DTYPE_UINT8:
    case v1::DTYPE_INT8:
    case v1::DTYPE_FLOAT8_E4M3FN:
    case v1::DTYPE_FLOAT8_E5M2:
      return 1;
    case v1::DTYPE_INT16:
    case v1::DTYPE_UINT16:
    case v1::DTYPE_FLOAT16:
    case v1::DTYPE_BFLOAT16:
      return 2;
    case v1::DTYPE_INT32:
    case v1::DTYPE_UINT32:
    case v1::DTYPE_FLOAT32:
    case v1::DTYPE_COMPLEX32:
      return 4;
    case v1::DTYPE_INT64:
    case v1::DTYPE_UINT64:
    case v1::DTYPE_FLOAT64:
    case v1::DTYPE_COMPLEX64:
      return 8;
    case v1::DTYPE_COMPLEX128:
      return 16;
    default:
      return 0;
  }
}

Status ValidateJobId(std::string_view job_id) {
  if (job_id.empty() || job_id.size() > 128) {
    return Status::InvalidArgument("job id must be 1 to 128 characters, got " +
                                   std::to_string(job_id.size()));
  }
  for (char c : job_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument("job id may hold only [A-Za-z0-9._-], got a byte 0x" +
                                     std::to_string(static_cast<unsigned char>(c)));
    }
  }
  return Status::Ok();
}

Result<ItemPlacement> PlaceItems(const google::protobuf::RepeatedPtrField<v1::ItemSpec>& items,
                                 uint64_t max_items, uint64_t max_bytes) {
  if (static_cast<uint64_t>(items.size()) > max_items) {
    return Status::ResourceExhausted(std::to_string(items.size()) + " items, the limit is " +
                                     std::to_string(max_items));
  }
  ItemPlacement out;
  out.offsets.reserve(items.size());
  std::unordered_set<std::string_view> names;
  names.reserve(items.size());
  uint64_t at = 0;
  for (int i = 0; i < items.size(); ++i) {
    const v1::ItemSpec& item = items[i];
    const std::string& name = item.name();
    const std::string where = "item " + std::to_string(i);
    if (name.empty() || name.size() > kMaxItemNameBytes) {
      return Status::InvalidArgument(where + ": name must be 1 to " +
                                     std::to_string(kMaxItemNameBytes) + " bytes");
    }
    if (name.find('\0') != std::string::npos) {
      return Status::InvalidArgument(where + ": name contains a NUL byte");
    }
    if (!names.insert(name).second) {
      return Status::InvalidArgument("duplicate item name '" + name + "'");
    }
    const uint64_t nbytes = item.nbytes();
    if (item.dtype() == v1::DTYPE_BYTES) {
      if (item.shape_size() != 0) {
        return Status::InvalidArgument("item '" + name + "': a DTYPE_BYTES blob has no shape");
      }
    } else {
      const uint64_t elem = DTypeSize(item.dtype());
      if (elem == 0) {
        return Status::InvalidArgument("item '" + name + "': unknown dtype " +
                                       std::to_string(static_cast<int>(item.dtype())));
      }
      if (item.shape_size() > kMaxShapeDims) {
        return Status::InvalidArgument("item '" + name + "': " +
                                       std::to_string(item.shape_size()) +
                                       " dimensions, the limit is " +
                                       std::to_string(kMaxShapeDims));
      }
      uint64_t expect = elem;
      for (int64_t dim : item.shape()) {
        if (dim < 0) {
          return Status::InvalidArgument("item '" + name + "': negative dimension " +
                                         std::to_string(dim));
        }
        if (dim != 0 && expect > UINT64_MAX / static_cast<uint64_t>(dim)) {
          return Status::InvalidArgument("item '" + name + "': shape overflows 64 bits");
        }
        expect *= static_cast<uint64_t>(dim);
      }
      if (expect != nbytes) {
        return Status::InvalidArgument("item '" + name + "': nbytes " + std::to_string(nbytes) +
                                       " disagrees with dtype and shape (" +
                                       std::to_string(expect) + " bytes)");
      }
    }
    if (nbytes > max_bytes || at > max_bytes - nbytes) {
      return Status::ResourceExhausted("snapshot larger than " + std::to_string(max_bytes) +
                                       " bytes (at item '" + name + "')");
    }
    out.offsets.push_back(at);
    at += nbytes;
    out.end = at;
    at = (at + kItemAlignment - 1) & ~(kItemAlignment - 1);
  }
  return out;
}

}  // namespace holdfast::smp
