// The C ABI (holdfast/client/holdfast.h) over the C++ Client.
//
// Every entry point runs its body inside Guard(), which turns any C++
// exception into a code and a message: nothing unwinds into C callers. The
// layer itself checks only the pointers it has to read; everything else is
// left to the C++ library so that both APIs report the same errors.
#include <chrono>
#include <exception>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "holdfast/client/client.h"
#include "holdfast/client/holdfast.h"

// The opaque handles of the header (declared there at global scope).
struct hf_client {
  std::unique_ptr<holdfast::client::Client> client;
};
struct hf_snapshot {
  holdfast::client::SnapshotHandle handle;
};
struct hf_item_list {
  std::vector<holdfast::client::ItemInfo> items;
};

namespace holdfast::client {
namespace {

#define HF_SAME_VALUE(c_name, cc_name) \
  static_assert(static_cast<int>(c_name) == static_cast<int>(cc_name), #c_name)
HF_SAME_VALUE(HF_OK, StatusCode::kOk);
HF_SAME_VALUE(HF_CANCELLED, StatusCode::kCancelled);
HF_SAME_VALUE(HF_UNKNOWN, StatusCode::kUnknown);
HF_SAME_VALUE(HF_INVALID_ARGUMENT, StatusCode::kInvalidArgument);
HF_SAME_VALUE(HF_DEADLINE_EXCEEDED, StatusCode::kDeadlineExceeded);
HF_SAME_VALUE(HF_NOT_FOUND, StatusCode::kNotFound);
HF_SAME_VALUE(HF_ALREADY_EXISTS, StatusCode::kAlreadyExists);
HF_SAME_VALUE(HF_PERMISSION_DENIED, StatusCode::kPermissionDenied);
HF_SAME_VALUE(HF_RESOURCE_EXHAUSTED, StatusCode::kResourceExhausted);
HF_SAME_VALUE(HF_FAILED_PRECONDITION, StatusCode::kFailedPrecondition);
HF_SAME_VALUE(HF_ABORTED, StatusCode::kAborted);
HF_SAME_VALUE(HF_OUT_OF_RANGE, StatusCode::kOutOfRange);
HF_SAME_VALUE(HF_UNIMPLEMENTED, StatusCode::kUnimplemented);
HF_SAME_VALUE(HF_INTERNAL, StatusCode::kInternal);
HF_SAME_VALUE(HF_UNAVAILABLE, StatusCode::kUnavailable);
HF_SAME_VALUE(HF_DATA_LOSS, StatusCode::kDataLoss);
HF_SAME_VALUE(HF_DTYPE_BYTES, DType::kBytes);
HF_SAME_VALUE(HF_DTYPE_BOOL, DType::kBool);
HF_SAME_VALUE(HF_DTYPE_UINT8, DType::kUInt8);
HF_SAME_VALUE(HF_DTYPE_INT8, DType::kInt8);
HF_SAME_VALUE(HF_DTYPE_INT16, DType::kInt16);
HF_SAME_VALUE(HF_DTYPE_UINT16, DType::kUInt16);
HF_SAME_VALUE(HF_DTYPE_INT32, DType::kInt32);
HF_SAME_VALUE(HF_DTYPE_UINT32, DType::kUInt32);
HF_SAME_VALUE(HF_DTYPE_INT64, DType::kInt64);
HF_SAME_VALUE(HF_DTYPE_UINT64, DType::kUInt64);
HF_SAME_VALUE(HF_DTYPE_FLOAT16, DType::kFloat16);
HF_SAME_VALUE(HF_DTYPE_BFLOAT16, DType::kBFloat16);
HF_SAME_VALUE(HF_DTYPE_FLOAT32, DType::kFloat32);
HF_SAME_VALUE(HF_DTYPE_FLOAT64, DType::kFloat64);
HF_SAME_VALUE(HF_DTYPE_COMPLEX32, DType::kComplex32);
HF_SAME_VALUE(HF_DTYPE_COMPLEX64, DType::kComplex64);
HF_SAME_VALUE(HF_DTYPE_COMPLEX128, DType::kComplex128);
HF_SAME_VALUE(HF_DTYPE_FLOAT8_E4M3FN, DType::kFloat8E4M3FN);
HF_SAME_VALUE(HF_DTYPE_FLOAT8_E5M2, DType::kFloat8E5M2);
HF_SAME_VALUE(HF_DEVICE_CPU, Device::kCpu);
HF_SAME_VALUE(HF_DEVICE_CUDA, Device::kCuda);
#undef HF_SAME_VALUE

// ---- this thread's last error ---------------------------------------------------------

// `fallback`, when set, replaces `message`: recording a message can itself
// run out of memory.
struct LastError {
  std::string message;
  const char* fallback = nullptr;
};
thread_local LastError t_last_error;

int Succeed() noexcept {
  t_last_error.message.clear();  // keeps the capacity: never allocates
  t_last_error.fallback = nullptr;
  return HF_OK;
}

// Records the concatenation of `parts` and returns `code`.
int Fail(int code, std::initializer_list<std::string_view> parts) noexcept {
  try {
    std::string message;
    for (std::string_view part : parts) message += part;
    t_last_error.message = std::move(message);
    t_last_error.fallback = nullptr;
  } catch (...) {
    t_last_error.fallback = "out of memory while recording an error";
  }
  return code;
}

int FromStatus(const Status& s) noexcept {
  if (s.ok()) return Succeed();
  const int code = static_cast<int>(s.code());
  return Fail(code, {s.message().empty() ? std::string_view(hf_code_name(code))
                                         : std::string_view(s.message())});
}

// Runs `body` (which returns a code), turning exceptions into codes.
template <typename Body>
int Guard(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Fail(HF_RESOURCE_EXHAUSTED, {function, ": out of memory"});
  } catch (const std::exception& e) {
    return Fail(HF_INTERNAL, {function, ": ", e.what()});
  } catch (...) {
    return Fail(HF_INTERNAL, {function, ": unknown exception"});
  }
}

// An argument error naming the function and the argument.
int BadArgument(const char* function, std::string_view what) noexcept {
  return Fail(HF_INVALID_ARGUMENT, {function, ": ", what});
}

// 1 or 0 as `get` says, -1 for a NULL handle or an exception.
template <typename Get>
int Flag(const char* function, const hf_snapshot* s, Get&& get) noexcept {
  int flag = -1;
  (void)Guard(function, [&] {
    if (s == nullptr) return BadArgument(function, "snapshot is NULL");
    flag = get(*s) ? 1 : 0;
    return Succeed();
  });
  return flag;
}

const Options& DefaultOptions() {
  static const Options* const defaults = new Options();  // never destroyed: safe at exit
  return *defaults;
}

std::optional<int64_t> StepOrLatest(int64_t step, int latest) {
  return latest ? std::nullopt : std::optional<int64_t>(step);
}

// Copies `items` into C++ views; InvalidArgument naming the first bad field.
Status ToItemViews(const hf_item* items, size_t n, std::vector<ItemView>* out) {
  if (items == nullptr && n > 0) {
    return Status::InvalidArgument("items is NULL but n is " + std::to_string(n));
  }
  out->reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const hf_item& item = items[i];
    const std::string where = "items[" + std::to_string(i) + "]";
    if (item.name == nullptr) return Status::InvalidArgument(where + ".name is NULL");
    if (item.shape == nullptr && item.ndim > 0) {
      return Status::InvalidArgument(where + ".shape is NULL but ndim is " +
                                     std::to_string(item.ndim));
    }
    if (item.dtype < HF_DTYPE_BYTES || item.dtype > HF_DTYPE_FLOAT8_E5M2) {
      return Status::InvalidArgument(where + ".dtype " + std::to_string(item.dtype) +
                                     " is not an hf_dtype");
    }
    if (item.device != HF_DEVICE_CPU && item.device != HF_DEVICE_CUDA) {
      return Status::InvalidArgument(where + ".device " + std::to_string(item.device) +
                                     " is not an hf_device");
    }
    ItemView& view = out->emplace_back();
    view.name = item.name;
    view.dtype = static_cast<DType>(item.dtype);
    if (item.ndim > 0) view.shape.assign(item.shape, item.shape + item.ndim);
    view.data = item.data;
    view.nbytes = item.nbytes;
    view.device = static_cast<Device>(item.device);
    view.device_index = item.device_index;
  }
  return Status::Ok();
}

void ToCStats(const SaveStats& s, hf_save_stats* out) {
  out->step = s.step;
  out->bytes = s.bytes;
  out->version_complete = s.version_complete ? 1 : 0;
  out->queue_seconds = s.queue_seconds;
  out->begin_seconds = s.begin_seconds;
  out->copy_seconds = s.copy_seconds;
  out->commit_seconds = s.commit_seconds;
  out->daemon_verify_seconds = s.daemon_verify_seconds;
  out->copy_threads = s.copy_threads;
}

int FromSaveResult(const Result<SaveStats>& r, hf_save_stats* stats) {
  if (!r.ok()) return FromStatus(r.status());
  if (stats != nullptr) ToCStats(*r, stats);
  return Succeed();
}

}  // namespace
}  // namespace holdfast::client

using holdfast::Status;
using holdfast::client::BadArgument;
using holdfast::client::Client;
using holdfast::client::Fail;
using holdfast::client::FromSaveResult;
using holdfast::client::FromStatus;
using holdfast::client::Guard;
using holdfast::client::ItemView;
using holdfast::client::StepOrLatest;
using holdfast::client::Succeed;

extern "C" {

// ---- library ----------------------------------------------------------------------------

int hf_api_version(void) { return HOLDFAST_C_API_VERSION; }

const char* hf_code_name(int code) {
  switch (code) {
    case HF_OK:
      return "OK";
    case HF_CANCELLED:
      return "CANCELLED";
    case HF_UNKNOWN:
      return "UNKNOWN";
    case HF_INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case HF_DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case HF_NOT_FOUND:
      return "NOT_FOUND";
    case HF_ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case HF_PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case HF_RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case HF_FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case HF_ABORTED:
      return "ABORTED";
    case HF_OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case HF_UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case HF_INTERNAL:
      return "INTERNAL";
    case HF_UNAVAILABLE:
      return "UNAVAILABLE";
    case HF_DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "(invalid code)";
  }
}

const char* hf_last_error(void) {
  const auto& e = holdfast::client::t_last_error;
  return e.fallback != nullptr ? e.fallback : e.message.c_str();
}

int hf_cuda_available(void) {
  try {
    return Client::CudaAvailable() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// ---- connecting -------------------------------------------------------------------------

void hf_options_init(hf_options* o) {
  if (o == nullptr) return;
  *o = hf_options{};
  try {
    const holdfast::client::Options& d = holdfast::client::DefaultOptions();
    o->endpoint = d.endpoint.c_str();
    o->job_id = d.job_id.c_str();
    o->rank = d.rank;
    o->world_size = d.world_size;
    o->rpc_timeout_ms = static_cast<int>(d.rpc_timeout.count());
    o->open_session = d.open_session ? 1 : 0;
    o->mapping_cache = d.mapping_cache;
    o->copy_threads = d.copy_threads;
  } catch (...) {
    // Only allocating the defaults can throw; leave the endpoint NULL so
    // that hf_connect reports it rather than guessing.
  }
}

int hf_connect(const hf_options* o, hf_client** out) {
  static constexpr const char* kFn = "hf_connect";
  return Guard(kFn, [&] {
    if (o == nullptr) return BadArgument(kFn, "options is NULL");
    if (out == nullptr) return BadArgument(kFn, "out is NULL");
    if (o->endpoint == nullptr) return BadArgument(kFn, "options->endpoint is NULL");
    if (o->job_id == nullptr) return BadArgument(kFn, "options->job_id is NULL");
    if (o->local_ranks == nullptr && o->num_local_ranks > 0) {
      return BadArgument(kFn, "options->local_ranks is NULL but num_local_ranks is " +
                                  std::to_string(o->num_local_ranks));
    }
    if (o->rpc_timeout_ms <= 0) {
      return BadArgument(
          kFn, "options->rpc_timeout_ms must be > 0, is " + std::to_string(o->rpc_timeout_ms));
    }
    holdfast::client::Options options;
    options.endpoint = o->endpoint;
    options.job_id = o->job_id;
    options.rank = o->rank;
    options.world_size = o->world_size;
    if (o->num_local_ranks > 0) {
      options.local_ranks.assign(o->local_ranks, o->local_ranks + o->num_local_ranks);
    }
    options.rpc_timeout = std::chrono::milliseconds(o->rpc_timeout_ms);
    options.open_session = o->open_session != 0;
    options.mapping_cache = o->mapping_cache;
    options.copy_threads = o->copy_threads;
    auto client = Client::Connect(options);
    if (!client.ok()) return FromStatus(client.status());
    auto handle = std::make_unique<hf_client>();
    handle->client = std::move(client).value();
    *out = handle.release();
    return Succeed();
  });
}

void hf_client_free(hf_client* c) { delete c; }

// ---- saving -------------------------------------------------------------------------------

int hf_save_async(hf_client* c, int64_t step, const hf_item* items, size_t n, hf_snapshot** out) {
  static constexpr const char* kFn = "hf_save_async";
  return Guard(kFn, [&] {
    if (c == nullptr) return BadArgument(kFn, "client is NULL");
    if (out == nullptr) return BadArgument(kFn, "out is NULL");
    std::vector<ItemView> views;
    Status valid = holdfast::client::ToItemViews(items, n, &views);
    if (!valid.ok()) return BadArgument(kFn, valid.message());
    auto handle = std::make_unique<hf_snapshot>();
    handle->handle = c->client->SaveAsync(step, views);
    *out = handle.release();
    return Succeed();
  });
}

int hf_snapshot_staged(const hf_snapshot* s) {
  return holdfast::client::Flag("hf_snapshot_staged", s,
                                [](const hf_snapshot& h) { return h.handle.staged(); });
}

int hf_snapshot_done(const hf_snapshot* s) {
  return holdfast::client::Flag("hf_snapshot_done", s,
                                [](const hf_snapshot& h) { return h.handle.done(); });
}

int hf_snapshot_wait_staged(hf_snapshot* s, int timeout_ms) {
  static constexpr const char* kFn = "hf_snapshot_wait_staged";
  return Guard(kFn, [&] {
    if (s == nullptr) return BadArgument(kFn, "snapshot is NULL");
    return FromStatus(timeout_ms < 0
                          ? s->handle.WaitStaged()
                          : s->handle.WaitStagedFor(std::chrono::milliseconds(timeout_ms)));
  });
}

int hf_snapshot_wait(hf_snapshot* s, int timeout_ms, hf_save_stats* stats) {
  static constexpr const char* kFn = "hf_snapshot_wait";
  return Guard(kFn, [&] {
    if (s == nullptr) return BadArgument(kFn, "snapshot is NULL");
    return FromSaveResult(timeout_ms < 0 ? s->handle.Wait()
                                         : s->handle.WaitFor(std::chrono::milliseconds(timeout_ms)),
                          stats);
  });
}

void hf_snapshot_free(hf_snapshot* s) { delete s; }

int hf_save(hf_client* c, int64_t step, const hf_item* items, size_t n, hf_save_stats* stats) {
  static constexpr const char* kFn = "hf_save";
  return Guard(kFn, [&] {
    if (c == nullptr) return BadArgument(kFn, "client is NULL");
    std::vector<ItemView> views;
    Status valid = holdfast::client::ToItemViews(items, n, &views);
    if (!valid.ok()) return BadArgument(kFn, valid.message());
    return FromSaveResult(c->client->Save(step, views), stats);
  });
}

// ---- querying and restoring ----------------------------------------------------------------

int hf_latest_step(hf_client* c, int64_t* step, int* found) {
  static constexpr const char* kFn = "hf_latest_step";
  return Guard(kFn, [&] {
    if (c == nullptr) return BadArgument(kFn, "client is NULL");
    if (step == nullptr) return BadArgument(kFn, "step is NULL");
    if (found == nullptr) return BadArgument(kFn, "found is NULL");
    auto latest = c->client->LatestStep();
    if (!latest.ok()) return FromStatus(latest.status());
    *found = latest->has_value() ? 1 : 0;
    if (latest->has_value()) *step = **latest;
    return Succeed();
  });
}

int hf_list_items(hf_client* c, int64_t step, int latest, hf_item_list** out) {
  static constexpr const char* kFn = "hf_list_items";
  return Guard(kFn, [&] {
    if (c == nullptr) return BadArgument(kFn, "client is NULL");
    if (out == nullptr) return BadArgument(kFn, "out is NULL");
    auto items = c->client->ListItems(StepOrLatest(step, latest));
    if (!items.ok()) return FromStatus(items.status());
    auto list = std::make_unique<hf_item_list>();
    list->items = std::move(items).value();
    *out = list.release();
    return Succeed();
  });
}

size_t hf_item_list_size(const hf_item_list* list) {
  return list == nullptr ? 0 : list->items.size();
}

int hf_item_list_get(const hf_item_list* list, size_t i, hf_item_info* out) {
  static constexpr const char* kFn = "hf_item_list_get";
  return Guard(kFn, [&] {
    if (list == nullptr) return BadArgument(kFn, "list is NULL");
    if (out == nullptr) return BadArgument(kFn, "out is NULL");
    if (i >= list->items.size()) {
      return Fail(HF_OUT_OF_RANGE, {kFn, ": index ", std::to_string(i), " of a list of ",
                                    std::to_string(list->items.size()), " items"});
    }
    const holdfast::client::ItemInfo& item = list->items[i];
    out->name = item.name.c_str();
    out->dtype = static_cast<int>(item.dtype);
    out->shape = item.shape.empty() ? nullptr : item.shape.data();
    out->ndim = item.shape.size();
    out->nbytes = item.nbytes;
    out->checksum = item.checksum;
    return Succeed();
  });
}

void hf_item_list_free(hf_item_list* list) { delete list; }

int hf_restore(hf_client* c, int64_t step, int latest, const hf_target* targets, size_t n,
               hf_restore_stats* stats) {
  static constexpr const char* kFn = "hf_restore";
  return Guard(kFn, [&] {
    if (c == nullptr) return BadArgument(kFn, "client is NULL");
    // With no names the daemon answers with every item; a restore needs a
    // buffer for each, so an empty request is refused here.
    if (n == 0) return BadArgument(kFn, "n is 0: name at least one target");
    if (targets == nullptr) {
      return BadArgument(kFn, "targets is NULL but n is " + std::to_string(n));
    }
    std::vector<holdfast::client::RestoreTarget> views;
    views.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (targets[i].name == nullptr) {
        return BadArgument(kFn, "targets[" + std::to_string(i) + "].name is NULL");
      }
      views.push_back({targets[i].name, targets[i].data, targets[i].nbytes});
    }
    auto restored = c->client->Restore(StepOrLatest(step, latest), views);
    if (!restored.ok()) return FromStatus(restored.status());
    if (stats != nullptr) {
      stats->step = restored->step;
      stats->bytes = restored->bytes;
      stats->open_seconds = restored->open_seconds;
      stats->copy_seconds = restored->copy_seconds;
    }
    return Succeed();
  });
}

int hf_drop(hf_client* c, int64_t step, int all) {
  static constexpr const char* kFn = "hf_drop";
  return Guard(kFn, [&] {
    if (c == nullptr) return BadArgument(kFn, "client is NULL");
    return FromStatus(c->client->Drop(StepOrLatest(step, all)));
  });
}

}  // extern "C"
