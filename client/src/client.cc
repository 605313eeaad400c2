#include "holdfast/client/client.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "copy_engine.h"
#include "device_copy.h"
#include "holdfast/client/job_secret.h"
#include "holdfast/proto/job_credentials.h"
#include "holdfast/proto/status_map.h"
#include "holdfast/v1/snapshot.grpc.pb.h"

namespace holdfast::client {
namespace {

using Clock = std::chrono::steady_clock;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

Status Errno(const std::string& what, const std::string& path) {
  return Status::Unavailable(what + " " + path + ": " + std::strerror(errno));
}

ItemInfo ToInfo(const v1::Item& item) {
  ItemInfo info;
  info.name = item.spec().name();
  info.dtype = static_cast<DType>(item.spec().dtype());
  info.shape.assign(item.spec().shape().begin(), item.spec().shape().end());
  info.nbytes = item.spec().nbytes();
  info.checksum = item.checksum();
  return info;
}

// A mapping of a daemon segment. Shared: the cache may drop it while a copy
// still uses it; the last owner unmaps.
class Mapping {
 public:
  Mapping(std::string path, uint8_t* data, uint64_t bytes)
      : path_(std::move(path)), data_(data), bytes_(bytes) {}
  ~Mapping() {
    if (registered_) internal::UnregisterHost(data_);
    munmap(data_, bytes_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  const std::string& path() const { return path_; }
  uint8_t* data() const { return data_; }
  uint64_t bytes() const { return bytes_; }

  // Page-locks the mapping for device copies, once. Failure is not an error:
  // the copies then go through the driver's staging.
  void RegisterForDevices() {
    std::call_once(register_once_, [this] {
      registered_ = internal::RegisterHost(data_, bytes_).ok();
    });
  }

 private:
  const std::string path_;
  uint8_t* const data_;
  const uint64_t bytes_;
  std::once_flag register_once_;
  bool registered_ = false;
};

}  // namespace

// ---- SnapshotHandle -----------------------------------------------------------------

struct SnapshotHandle::State {
  int64_t step = 0;
  std::vector<ItemView> items;  // the caller's buffers; dropped once staged
  Clock::time_point enqueued = Clock::now();

  mutable std::mutex mu;
  std::condition_variable changed;
  bool staged = false;  // guarded by mu
  bool done = false;    // guarded by mu
  Status status;        // guarded by mu; the first error
  SaveStats stats;      // guarded by mu; final once done

  void MarkStaged() {
    {
      std::lock_guard lock(mu);
      staged = true;
      items.clear();
      items.shrink_to_fit();
    }
    changed.notify_all();
  }
  void Finish(Status s, const SaveStats& final_stats) {
    {
      std::lock_guard lock(mu);
      staged = true;
      done = true;
      status = std::move(s);
      stats = final_stats;
      items.clear();
    }
    changed.notify_all();
  }
};

SnapshotHandle::SnapshotHandle(SnapshotHandle&&) noexcept = default;

SnapshotHandle& SnapshotHandle::operator=(SnapshotHandle&& other) noexcept {
  if (this != &other) {
    if (state_) (void)WaitStaged();
    state_ = std::move(other.state_);
  }
  return *this;
}

SnapshotHandle::~SnapshotHandle() {
  if (state_) (void)WaitStaged();
}

int64_t SnapshotHandle::step() const { return state_ ? state_->step : -1; }

bool SnapshotHandle::staged() const {
  if (!state_) return true;
  std::lock_guard lock(state_->mu);
  return state_->staged;
}

bool SnapshotHandle::done() const {
  if (!state_) return true;
  std::lock_guard lock(state_->mu);
  return state_->done;
}

Status SnapshotHandle::WaitStaged() {
  if (!state_) return Status::FailedPrecondition("empty snapshot handle");
  std::unique_lock lock(state_->mu);
  state_->changed.wait(lock, [&] { return state_->staged; });
  return state_->status;
}

Result<SaveStats> SnapshotHandle::Wait() {
  if (!state_) return Status::FailedPrecondition("empty snapshot handle");
  std::unique_lock lock(state_->mu);
  state_->changed.wait(lock, [&] { return state_->done; });
  if (!state_->status.ok()) return state_->status;
  return state_->stats;
}

Status SnapshotHandle::WaitStagedFor(std::chrono::milliseconds timeout) {
  if (!state_) return Status::FailedPrecondition("empty snapshot handle");
  std::unique_lock lock(state_->mu);
  if (!state_->changed.wait_for(lock, timeout, [&] { return state_->staged; })) {
    return Status::DeadlineExceeded("snapshot of step " + std::to_string(state_->step) +
                                    " not staged within " + std::to_string(timeout.count()) +
                                    " ms");
  }
  return state_->status;
}

Result<SaveStats> SnapshotHandle::WaitFor(std::chrono::milliseconds timeout) {
  if (!state_) return Status::FailedPrecondition("empty snapshot handle");
  std::unique_lock lock(state_->mu);
  if (!state_->changed.wait_for(lock, timeout, [&] { return state_->done; })) {
    return Status::DeadlineExceeded("snapshot of step " + std::to_string(state_->step) +
                                    " not committed within " + std::to_string(timeout.count()) +
                                    " ms");
  }
  if (!state_->status.ok()) return state_->status;
  return state_->stats;
}

// ---- Client::Impl --------------------------------------------------------------------

struct Client::Impl {
  Options options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Snapshot::Stub> stub;
  std::unique_ptr<internal::CopyEngine> copier;
  // The job's secret, carried by every call (job_secret.h); set by Connect.
  std::string secret;

  // The session stream: while it is open the daemon knows this process is
  // alive, and aborts its writes and leases at once when it breaks. A thread
  // blocks reading it until we cancel it or the daemon goes away; after a
  // daemon restart the next call opens a new one.
  struct Session {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::SessionEvent>> reader;
    std::thread thread;
    std::atomic<bool> ended{false};
    uint64_t id = 0;
    ~Session() {
      ctx.TryCancel();
      if (thread.joinable()) thread.join();
    }
  };
  std::mutex session_mu;
  std::unique_ptr<Session> session;  // guarded by session_mu

  std::mutex map_mu;
  std::list<std::shared_ptr<Mapping>> mappings;  // most recently used first; guarded by map_mu

  // The snapshot pipeline: one thread saving queued snapshots in order.
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<std::shared_ptr<SnapshotHandle::State>> queue;  // guarded by queue_mu
  bool stopping = false;                                     // guarded by queue_mu
  std::thread pipeline;

  ~Impl() {
    {
      std::lock_guard lock(queue_mu);
      stopping = true;
    }
    queue_cv.notify_all();
    if (pipeline.joinable()) pipeline.join();
    std::lock_guard lock(session_mu);
    session.reset();
  }

  void Deadline(grpc::ClientContext* ctx) const {
    ctx->set_deadline(std::chrono::system_clock::now() + options.rpc_timeout);
    AddCredentials(ctx);
  }

  void AddCredentials(grpc::ClientContext* ctx) const {
    // A job id gRPC cannot carry is left out; the daemon refuses it anyway.
    if (proto::MetadataSafe(options.job_id)) {
      ctx->AddMetadata(proto::kJobIdMetadata, options.job_id);
    }
    if (!secret.empty()) ctx->AddMetadata(proto::kJobSecretMetadata, secret);
  }

  template <typename Req, typename Resp, typename Method>
  Status Call(Method method, const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    return proto::FromGrpc((stub.get()->*method)(&ctx, req, resp));
  }

  // A mapping of `path` of exactly `bytes`, from the cache or new.
  Result<std::shared_ptr<Mapping>> Map(const std::string& path, uint64_t bytes) {
    {
      std::lock_guard lock(map_mu);
      for (auto it = mappings.begin(); it != mappings.end(); ++it) {
        if ((*it)->path() != path) continue;
        if ((*it)->bytes() == bytes) {
          mappings.splice(mappings.begin(), mappings, it);
          return *it;
        }
        mappings.erase(it);  // the daemon recreated it with another size
        break;
      }
    }
    // Map outside the lock: populating 1 GiB takes tens of milliseconds.
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Errno("cannot open segment", path);
    struct stat st;
    if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < bytes) {
      close(fd);
      return Status::DataLoss("segment " + path + " is smaller than the daemon says");
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return Errno("cannot map segment", path);
    // Populating the page tables in one call costs far less than faulting
    // page by page (measured 2.3x on our VMs); failure only costs speed.
    (void)madvise(p, bytes, MADV_POPULATE_WRITE);
    auto mapping = std::make_shared<Mapping>(path, static_cast<uint8_t*>(p), bytes);
    std::lock_guard lock(map_mu);
    mappings.push_front(mapping);
    while (static_cast<int>(mappings.size()) > std::max(1, options.mapping_cache)) {
      mappings.pop_back();
    }
    return mapping;
  }

  // Opens a session stream; session_mu held.
  Status OpenSessionLocked() {
    session.reset();
    auto s = std::make_unique<Session>();
    v1::OpenSessionRequest req;
    req.set_job_id(options.job_id);
    req.set_rank(options.rank);
    req.set_pid(getpid());
    AddCredentials(&s->ctx);
    s->reader = stub->OpenSession(&s->ctx, req);
    v1::SessionEvent first;
    if (!s->reader->Read(&first)) {
      Status st = proto::FromGrpc(s->reader->Finish());
      s->reader.reset();
      return st.ok() ? Status::Unavailable("session closed by the daemon") : st;
    }
    s->id = first.session_id();
    Session* raw = s.get();
    s->thread = std::thread([raw] {
      v1::SessionEvent ev;
      while (raw->reader->Read(&ev)) {
      }
      (void)raw->reader->Finish();
      raw->ended = true;
    });
    session = std::move(s);
    return Status::Ok();
  }

  Status OpenSession() {
    std::lock_guard lock(session_mu);
    return OpenSessionLocked();
  }

  // The id to send with Begin and OpenRestore: the open session's, or a new
  // one's if the stream broke (the daemon restarted); 0 (no session: the
  // daemon's timeouts clean up) when sessions are off or none can be opened
  // now, in which case the call itself reports the daemon's state.
  // `stale`: the daemon said the current id is not open.
  uint64_t SessionId(bool stale = false) {
    if (!options.open_session) return 0;
    std::lock_guard lock(session_mu);
    if (session && !session->ended && !stale) return session->id;
    if (!OpenSessionLocked().ok()) return 0;
    return session->id;
  }

  static bool SessionUnknown(const Status& s) {
    return s.code() == StatusCode::kNotFound &&
           s.message().find("session") != std::string::npos &&
           s.message().find("is not open") != std::string::npos;
  }

  void PipelineLoop() {
    for (;;) {
      std::shared_ptr<SnapshotHandle::State> task;
      {
        std::unique_lock lock(queue_mu);
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, nothing left
        task = std::move(queue.front());
        queue.pop_front();
      }
      SaveStats stats;
      stats.step = task->step;
      stats.queue_seconds = Since(task->enqueued);
      Status s = RunSave(*task, &stats);
      task->Finish(std::move(s), stats);
    }
  }

  // Begin, copy (marking the task staged), commit.
  Status RunSave(SnapshotHandle::State& task, SaveStats* stats) {
    const std::vector<ItemView>& items = task.items;
    stats->copy_threads = copier->threads();
    auto t = Clock::now();
    v1::BeginSnapshotRequest begin;
    begin.set_job_id(options.job_id);
    begin.set_rank(options.rank);
    begin.set_step(task.step);
    begin.set_session_id(SessionId());
    bool any_device = false;
    for (const ItemView& item : items) {
      if (item.data == nullptr && item.nbytes > 0) {
        return Status::InvalidArgument("item '" + item.name + "' has no data");
      }
      if (item.device == Device::kCuda) {
        any_device = true;
      } else if (item.device != Device::kCpu) {
        return Status::InvalidArgument("item '" + item.name + "' has an unknown device");
      }
      v1::ItemSpec* spec = begin.add_items();
      spec->set_name(item.name);
      spec->set_dtype(static_cast<v1::DType>(item.dtype));
      for (int64_t dim : item.shape) spec->add_shape(dim);
      spec->set_nbytes(item.nbytes);
    }
    if (any_device && !internal::CudaAvailable()) {
      return Status::FailedPrecondition(
          "snapshot has CUDA items, but no CUDA device is usable in this process");
    }
    v1::BeginSnapshotResponse reserved;
    Status began = Call(&v1::Snapshot::Stub::BeginSnapshot, begin, &reserved);
    if (SessionUnknown(began)) {
      // The daemon restarted since our session opened: open a new one, retry.
      begin.set_session_id(SessionId(/*stale=*/true));
      began = Call(&v1::Snapshot::Stub::BeginSnapshot, begin, &reserved);
    }
    HOLDFAST_RETURN_IF_ERROR(began.WithContext("begin snapshot of step " +
                                               std::to_string(task.step)));
    auto abort = [&](Status s) {
      v1::AbortSnapshotRequest req;
      req.set_job_id(options.job_id);
      req.set_rank(options.rank);
      req.set_write_id(reserved.write_id());
      v1::AbortSnapshotResponse resp;
      (void)Call(&v1::Snapshot::Stub::AbortSnapshot, req, &resp);
      return s;
    };
    if (reserved.offsets_size() != static_cast<int>(items.size())) {
      return abort(Status::Internal("daemon placed " + std::to_string(reserved.offsets_size()) +
                                    " items, expected " + std::to_string(items.size())));
    }
    auto mapping = Map(reserved.segment().path(), reserved.segment().bytes());
    if (!mapping.ok()) return abort(mapping.status());
    uint8_t* const base = (*mapping)->data();
    stats->begin_seconds = Since(t);

    t = Clock::now();
    std::vector<internal::CopyJob> jobs;
    std::vector<internal::DeviceCopy> device_copies;
    jobs.reserve(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      const uint64_t off = reserved.offsets(static_cast<int>(i));
      const uint64_t n = items[i].nbytes;
      if (off > reserved.segment().bytes() || n > reserved.segment().bytes() - off) {
        return abort(Status::Internal("daemon placed item '" + items[i].name +
                                      "' outside its segment"));
      }
      if (items[i].device == Device::kCuda) {
        device_copies.push_back({base + off, items[i].data, n, items[i].device_index});
        jobs.push_back({base + off, nullptr, n});  // checksum what landed
      } else {
        jobs.push_back({base + off, static_cast<const uint8_t*>(items[i].data), n});
      }
      stats->bytes += n;
    }
    if (!device_copies.empty()) {
      (*mapping)->RegisterForDevices();
      if (Status s = internal::CopyDeviceToHost(device_copies); !s.ok()) {
        task.MarkStaged();
        return abort(s.WithContext("staging CUDA items of step " + std::to_string(task.step)));
      }
    }
    std::vector<uint64_t> sums(jobs.size());
    copier->CopyAndChecksum(jobs, sums);
    // Every byte is in shared memory: the caller's buffers are free again.
    task.MarkStaged();
    stats->copy_seconds = Since(t);

    t = Clock::now();
    v1::CommitSnapshotRequest commit;
    commit.set_job_id(options.job_id);
    commit.set_rank(options.rank);
    commit.set_step(task.step);
    commit.set_write_id(reserved.write_id());
    for (uint64_t sum : sums) commit.add_checksums(sum);
    v1::CommitSnapshotResponse committed;
    HOLDFAST_RETURN_IF_ERROR(Call(&v1::Snapshot::Stub::CommitSnapshot, commit, &committed)
                                 .WithContext("commit snapshot of step " +
                                              std::to_string(task.step)));
    stats->commit_seconds = Since(t);
    stats->daemon_verify_seconds = static_cast<double>(committed.verify_micros()) / 1e6;
    stats->version_complete = committed.version_complete();
    return Status::Ok();
  }

  // Opens a lease on `step` (nullopt: newest) for `names` (empty: all).
  Result<v1::OpenRestoreResponse> OpenLease(std::optional<int64_t> step,
                                            const std::vector<std::string>& names) {
    v1::OpenRestoreRequest req;
    req.set_job_id(options.job_id);
    req.set_rank(options.rank);
    req.set_latest(!step.has_value());
    req.set_step(step.value_or(0));
    req.set_session_id(SessionId());
    req.set_resume(options.restore_resumes);
    for (const auto& n : names) req.add_names(n);
    v1::OpenRestoreResponse resp;
    Status opened = Call(&v1::Snapshot::Stub::OpenRestore, req, &resp);
    if (SessionUnknown(opened)) {
      req.set_session_id(SessionId(/*stale=*/true));
      opened = Call(&v1::Snapshot::Stub::OpenRestore, req, &resp);
    }
    HOLDFAST_RETURN_IF_ERROR(opened);
    return resp;
  }

  void CloseLease(uint64_t lease, bool verified) {
    v1::CloseRestoreRequest req;
    req.set_lease_id(lease);
    req.set_verified(verified);
    v1::CloseRestoreResponse resp;
    (void)Call(&v1::Snapshot::Stub::CloseRestore, req, &resp);
  }

  // Copies items of an open lease into `dsts` (same order as lease.items())
  // and checks them. `map_seconds` gets the time spent mapping.
  Status CopyOut(const v1::OpenRestoreResponse& lease, const std::vector<uint8_t*>& dsts,
                 double* map_seconds) {
    const auto t = Clock::now();
    HOLDFAST_ASSIGN_OR_RETURN(std::shared_ptr<Mapping> mapping,
                              Map(lease.segment().path(), lease.segment().bytes()));
    *map_seconds = Since(t);
    uint8_t* const base = mapping->data();
    std::vector<internal::CopyJob> jobs;
    jobs.reserve(lease.items_size());
    for (int i = 0; i < lease.items_size(); ++i) {
      const v1::Item& item = lease.items(i);
      const uint64_t n = item.spec().nbytes();
      if (item.offset() > lease.segment().bytes() ||
          n > lease.segment().bytes() - item.offset()) {
        return Status::DataLoss("item '" + item.spec().name() + "' lies outside its segment");
      }
      jobs.push_back({dsts[i], base + item.offset(), n});
    }
    std::vector<uint64_t> sums(jobs.size());
    copier->CopyAndChecksum(jobs, sums);
    for (int i = 0; i < lease.items_size(); ++i) {
      const v1::Item& item = lease.items(i);
      if (sums[i] != item.checksum()) {
        return Status::DataLoss("item '" + item.spec().name() + "' of step " +
                                std::to_string(lease.step()) +
                                " does not match its checksum; the daemon has been told");
      }
    }
    return Status::Ok();
  }
};

// ---- Client ---------------------------------------------------------------------------

void PrepareFreshMemory(void* data, uint64_t nbytes) {
  const uint64_t begin = reinterpret_cast<uint64_t>(data);
  const uint64_t end = begin + nbytes;
  // Huge pages on the 2 MiB-aligned interior (honoured when THP is
  // "always" or "madvise"), then every page table entry in one call.
  constexpr uint64_t kHuge = uint64_t{2} << 20;
  const uint64_t huge_begin = (begin + kHuge - 1) & ~(kHuge - 1);
  const uint64_t huge_end = end & ~(kHuge - 1);
  if (huge_end > huge_begin) {
    (void)madvise(reinterpret_cast<void*>(huge_begin), huge_end - huge_begin, MADV_HUGEPAGE);
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t page_begin = (begin + page - 1) & ~(page - 1);
  const uint64_t page_end = end & ~(page - 1);
  if (page_end > page_begin) {
    (void)madvise(reinterpret_cast<void*>(page_begin), page_end - page_begin,
                  MADV_POPULATE_WRITE);
  }
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const Options& Client::options() const { return impl_->options; }

int Client::copy_threads() const { return impl_->copier->threads(); }

bool Client::CudaAvailable() { return internal::CudaAvailable(); }

Result<std::unique_ptr<Client>> Client::Connect(const Options& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (impl->options.local_ranks.empty()) impl->options.local_ranks = {options.rank};
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  impl->channel =
      grpc::CreateCustomChannel(options.endpoint, grpc::InsecureChannelCredentials(), args);
  impl->stub = v1::Snapshot::NewStub(impl->channel);
  impl->copier = std::make_unique<internal::CopyEngine>(options.copy_threads);

  v1::RegisterJobRequest req;
  req.set_job_id(options.job_id);
  req.set_world_size(options.world_size);
  for (int r : impl->options.local_ranks) req.add_local_ranks(r);
  Impl* reg = impl.get();
  auto secret = RegisterWithJobSecret(
      options.endpoint, options.job_id, [&](const std::string& presented) -> Result<std::string> {
        reg->secret = presented;
        v1::RegisterJobResponse resp;
        HOLDFAST_RETURN_IF_ERROR(reg->Call(&v1::Snapshot::Stub::RegisterJob, req, &resp));
        return resp.job_secret();
      });
  HOLDFAST_RETURN_IF_ERROR(secret.status().WithContext("register job at " + options.endpoint));
  impl->secret = *secret;
  if (options.open_session) HOLDFAST_RETURN_IF_ERROR(impl->OpenSession());
  Impl* raw = impl.get();
  impl->pipeline = std::thread([raw] { raw->PipelineLoop(); });
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

SnapshotHandle Client::SaveAsync(int64_t step, std::span<const ItemView> items) {
  auto state = std::make_shared<SnapshotHandle::State>();
  state->step = step;
  state->items.assign(items.begin(), items.end());
  {
    std::lock_guard lock(impl_->queue_mu);
    impl_->queue.push_back(state);
  }
  impl_->queue_cv.notify_one();
  return SnapshotHandle(std::move(state));
}

Result<SaveStats> Client::Save(int64_t step, std::span<const ItemView> items) {
  return SaveAsync(step, items).Wait();
}

Result<std::optional<int64_t>> Client::LatestStep() {
  v1::ListVersionsRequest req;
  req.set_job_id(impl_->options.job_id);
  v1::ListVersionsResponse resp;
  HOLDFAST_RETURN_IF_ERROR(impl_->Call(&v1::Snapshot::Stub::ListVersions, req, &resp));
  // In a cluster the daemon names the restore point every node agrees on.
  for (const v1::RestorePoint& rp : resp.restore_points()) {
    if (rp.job_id() != impl_->options.job_id) continue;
    if (rp.step() < 0) return std::optional<int64_t>();
    return std::optional<int64_t>(rp.step());
  }
  std::optional<int64_t> latest;
  for (const v1::VersionInfo& v : resp.versions()) {
    if (v.state() >= v1::VERSION_STATE_COMPLETE) latest = std::max(latest.value_or(v.step()), v.step());
  }
  return latest;
}

Result<std::vector<ItemInfo>> Client::ListItems(std::optional<int64_t> step) {
  HOLDFAST_ASSIGN_OR_RETURN(v1::OpenRestoreResponse lease, impl_->OpenLease(step, {}));
  impl_->CloseLease(lease.lease_id(), true);
  std::vector<ItemInfo> out;
  for (const v1::Item& item : lease.items()) out.push_back(ToInfo(item));
  return out;
}

Result<RestoreStats> Client::Restore(std::optional<int64_t> step,
                                     std::span<const RestoreTarget> targets) {
  Impl& d = *impl_;
  if (targets.empty()) {
    // An empty name list means "every item" to the daemon; RestoreAll is for that.
    return Status::InvalidArgument("restore needs at least one target (RestoreAll restores all)");
  }
  RestoreStats stats;
  auto t = Clock::now();
  std::vector<std::string> names;
  for (const RestoreTarget& target : targets) names.push_back(target.name);
  HOLDFAST_ASSIGN_OR_RETURN(v1::OpenRestoreResponse lease, d.OpenLease(step, names));
  stats.step = lease.step();
  std::vector<uint8_t*> dsts;
  for (int i = 0; i < lease.items_size(); ++i) {
    const RestoreTarget& target = targets[i];
    if (target.nbytes != lease.items(i).spec().nbytes() ||
        (target.data == nullptr && target.nbytes > 0)) {
      d.CloseLease(lease.lease_id(), true);
      return Status::InvalidArgument("item '" + target.name + "' has " +
                                     std::to_string(lease.items(i).spec().nbytes()) +
                                     " bytes, the target buffer " +
                                     std::to_string(target.nbytes));
    }
    dsts.push_back(static_cast<uint8_t*>(target.data));
    stats.bytes += target.nbytes;
  }
  stats.open_seconds = Since(t);
  t = Clock::now();
  double map_seconds = 0;
  Status copied = d.CopyOut(lease, dsts, &map_seconds);
  stats.copy_seconds = Since(t) - map_seconds;
  stats.open_seconds += map_seconds;
  d.CloseLease(lease.lease_id(), copied.code() != StatusCode::kDataLoss);
  HOLDFAST_RETURN_IF_ERROR(copied);
  return stats;
}

Result<RestoredSnapshot> Client::RestoreAll(std::optional<int64_t> step) {
  Impl& d = *impl_;
  RestoredSnapshot out;
  auto t = Clock::now();
  HOLDFAST_ASSIGN_OR_RETURN(v1::OpenRestoreResponse lease, d.OpenLease(step, {}));
  out.step = lease.step();
  out.stats.step = lease.step();
  std::vector<uint8_t*> dsts;
  for (const v1::Item& item : lease.items()) {
    RestoredItem r;
    r.info = ToInfo(item);
    r.data.reset(new uint8_t[std::max<uint64_t>(1, item.spec().nbytes())]);
    PrepareFreshMemory(r.data.get(), item.spec().nbytes());
    dsts.push_back(r.data.get());
    out.stats.bytes += item.spec().nbytes();
    out.items.push_back(std::move(r));
  }
  out.stats.open_seconds = Since(t);
  t = Clock::now();
  double map_seconds = 0;
  Status copied = d.CopyOut(lease, dsts, &map_seconds);
  out.stats.copy_seconds = Since(t) - map_seconds;
  out.stats.open_seconds += map_seconds;
  d.CloseLease(lease.lease_id(), copied.code() != StatusCode::kDataLoss);
  HOLDFAST_RETURN_IF_ERROR(copied);
  return out;
}

Status Client::Drop(std::optional<int64_t> step) {
  v1::DropVersionsRequest req;
  req.set_job_id(impl_->options.job_id);
  req.set_all(!step.has_value());
  req.set_step(step.value_or(0));
  v1::DropVersionsResponse resp;
  return impl_->Call(&v1::Snapshot::Stub::DropVersions, req, &resp);
}

}  // namespace holdfast::client
