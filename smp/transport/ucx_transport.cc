// Transport over UCX (ucp tag matching), see transport.h.
//
// Design: the worker is created in UCS_THREAD_MODE_SINGLE and only the
// progress thread ever touches UCX. The public methods turn into commands on
// a queue that the progress thread executes in order (so a Cancel always
// finds the operation its Send/Recv created), and every completion, whether
// UCX reported it from a callback or at once, is collected and handed to its
// `done` after ucp_worker_progress has returned: user code never runs inside
// UCX, and never inside the method that started the operation.
//
// What UCX 1.13 can and cannot interrupt:
//   - ucp_request_cancel removes only a receive that no message has matched
//     yet. A matched receive (a rendezvous transfer under way) and any send
//     run to their end; Cancel then has no effect and `done` reports what
//     UCX reported, because the buffer is UCX's until then.
//   - A forced ucp_ep_close_nbx completes the endpoint's sends with
//     UCS_ERR_CANCELED (Disconnect and the destructor use it).
//   - UCX pairs the endpoints two workers create to each other (the k-th
//     endpoint from a to b with the k-th from b to a): each is the other's
//     remote end. A graceful close of an endpoint whose peer is connected to
//     it keeps it, closed, until the worker is destroyed; the peer's
//     endpoint is never told and stays a zombie: its small messages still
//     arrive, its rendezvous messages are dropped here (the receive that
//     matches one completes with UCS_ERR_CANCELED) and their sends never
//     complete. Disconnect therefore always forces the close: that destroys
//     the endpoint and its sockets, and the peer's endpoint fails at once
//     (Failed), so its owner reconnects.
//   - ucp_worker_destroy stops all I/O into user buffers, so the destructor
//     may finish whatever is still outstanding after a grace period.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "spdlog/spdlog.h"
#include "transport/transport.h"

namespace holdfast::smp {
namespace {

// ---- the address format -------------------------------------------------------
//
// UCX parses a worker address without being told its length, so garbage
// handed to ucp_ep_create can read past the end of the buffer. address()
// therefore wraps UCX's bytes: magic, length, the bytes, FNV-1a of the bytes;
// Connect checks all of it before UCX sees anything.
constexpr char kAddressMagic[8] = {'h', 'f', 'u', 'c', 'x', 'a', 'd', '1'};
constexpr size_t kAddressOverhead = sizeof(kAddressMagic) + 8 + 8;

uint64_t Fnv1a(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

void AppendU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t LoadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string WrapAddress(const void* ucx_address, size_t length) {
  std::string out(kAddressMagic, sizeof(kAddressMagic));
  AppendU64(&out, length);
  out.append(static_cast<const char*>(ucx_address), length);
  AppendU64(&out, Fnv1a(ucx_address, length));
  return out;
}

// UCX's address bytes inside `wrapped`, or INVALID_ARGUMENT.
Result<std::string> UnwrapAddress(const std::string& wrapped) {
  if (wrapped.size() <= kAddressOverhead ||
      std::memcmp(wrapped.data(), kAddressMagic, sizeof(kAddressMagic)) != 0) {
    return Status::InvalidArgument("not a holdfast transport address (" +
                                   std::to_string(wrapped.size()) + " bytes)");
  }
  const uint64_t length = LoadU64(wrapped.data() + sizeof(kAddressMagic));
  if (length != wrapped.size() - kAddressOverhead) {
    return Status::InvalidArgument("transport address is truncated or padded");
  }
  const char* bytes = wrapped.data() + sizeof(kAddressMagic) + 8;
  if (LoadU64(bytes + length) != Fnv1a(bytes, length)) {
    return Status::InvalidArgument("transport address is corrupt (checksum mismatch)");
  }
  return std::string(bytes, length);
}

std::string UcsMessage(ucs_status_t status) {
  return std::string(ucs_status_string(status)) + " (" + std::to_string(static_cast<int>(status)) +
         ")";
}

// How a failed UCX operation reads to our callers.
Status FromUcs(ucs_status_t status, std::string_view what) {
  std::string msg = std::string(what) + ": " + UcsMessage(status);
  switch (status) {
    case UCS_OK:
      return Status::Ok();
    case UCS_ERR_CANCELED:
      return Status::Cancelled(std::move(msg));
    case UCS_ERR_MESSAGE_TRUNCATED:
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return Status::InvalidArgument(std::move(msg));
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
      return Status::ResourceExhausted(std::move(msg));
    default:
      // Peer gone, connection reset, timeouts, unreachable: the peer is not
      // usable, which is what callers act on.
      return Status::Unavailable(std::move(msg));
  }
}

// ---- the transport ------------------------------------------------------------------

class UcxTransport final : public Transport {
 public:
  UcxTransport() = default;
  ~UcxTransport() override;
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  // Starts the progress thread, which creates the context and worker.
  Status Start(const TransportOptions& options);

  const std::string& address() const override { return address_; }
  Result<EndpointId> Connect(const std::string& worker_address) override;
  void Disconnect(EndpointId endpoint) override;
  bool Failed(EndpointId endpoint) const override;
  OpId Send(EndpointId endpoint, uint64_t tag, const void* data, uint64_t length,
            Done done) override;
  OpId Recv(uint64_t tag, void* buffer, uint64_t capacity, Done done) override;
  void Cancel(OpId op) override;
  TransportStats stats() const override;

 private:
  struct Op {
    UcxTransport* owner = nullptr;
    OpId id = 0;
    bool is_send = false;
    EndpointId endpoint = 0;  // sends
    uint64_t tag = 0;
    void* buffer = nullptr;
    uint64_t length = 0;  // sends: bytes to send; receives: capacity
    Done done;
    void* request = nullptr;  // UCX's, while it is in flight
    bool completed = false;   // UCX is done with it; waiting in completed_
    ucs_status_t ucs_status = UCS_OK;
    uint64_t received = 0;  // receives: the message's length as UCX reported it
    // Set when the operation's fate was decided above UCX (endpoint closed by
    // Disconnect or shutdown: CANCELLED; endpoint failed: UNAVAILABLE): an
    // error from UCX is reported as this instead.
    Status override_error;
    bool cancel_requested = false;  // Cancel or shutdown asked UCX to cancel it
  };

  struct Endpoint {
    ucp_ep_h handle = nullptr;      // null once closed (failed)
    Status failure;                 // the first error, once failed
    std::unordered_set<Op*> sends;  // in flight
  };

  struct Command {
    enum class Kind { kPost, kCancel, kConnect, kDisconnect, kStop };
    Kind kind = Kind::kStop;
    std::unique_ptr<Op> op;   // kPost
    OpId op_id = 0;           // kCancel
    EndpointId endpoint = 0;  // kDisconnect
    std::string ucx_address;  // kConnect
    // kConnect. Shared: the caller may wake and return before set_value
    // has returned on the progress thread.
    std::shared_ptr<std::promise<Result<EndpointId>>> reply;
  };

  // UCX callbacks (run inside ucp_* calls on the progress thread).
  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnRecvDone(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                         void* user_data);
  static void OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static void OnCloseDone(void* request, ucs_status_t status, void* user_data);

  bool OnProgressThread() const { return std::this_thread::get_id() == thread_.get_id(); }
  OpId NextOpId() { return next_op_id_.fetch_add(1, std::memory_order_relaxed); }
  void Push(Command command);
  void Wake();

  // Progress thread.
  void Run(const TransportOptions& options, std::promise<Status>* started);
  Status InitUcx(const TransportOptions& options);
  void Loop();
  void Shutdown();
  void DestroyUcx();
  bool RunCommands();
  void Execute(Command& command);
  void Post(std::unique_ptr<Op> op);
  void CancelOp(OpId id);
  Result<EndpointId> DoConnect(const std::string& ucx_address);
  void DoDisconnect(EndpointId id);
  // Forced close (see the top of this file).
  void CloseHandle(ucp_ep_h handle);
  void HandleFailedEndpoints();
  void FailEndpoint(Endpoint& endpoint, Status failure);
  void CompleteNow(Op* op, ucs_status_t status);
  bool RunCompletions();
  void Sleep(int timeout_ms);

  std::string address_;
  int event_fd_ = -1;
  int epoll_fd_ = -1;
  std::thread thread_;
  std::atomic<OpId> next_op_id_{1};

  std::mutex mu_;
  std::deque<Command> commands_;  // guarded by mu_

  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
  std::atomic<uint64_t> sends_failed_{0};
  std::atomic<uint64_t> cancelled_{0};

  // Endpoints whose peer failed and that were not disconnected yet: written
  // by the progress thread, read by Failed() from any thread.
  mutable std::mutex failed_mu_;
  std::unordered_set<EndpointId> failed_ids_;  // guarded by failed_mu_

  // Progress-thread state.
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int worker_fd_ = -1;
  bool stopping_ = false;
  std::unordered_map<OpId, std::unique_ptr<Op>> ops_;
  std::vector<Op*> completed_;
  EndpointId next_endpoint_id_ = 1;
  std::unordered_map<EndpointId, Endpoint> endpoints_;
  std::unordered_map<ucp_ep_h, EndpointId> endpoint_by_handle_;
  std::vector<std::pair<ucp_ep_h, ucs_status_t>> failed_handles_;
  int pending_closes_ = 0;
};

// Empty progress calls made with operations in flight before the thread
// arms the worker and sleeps: long enough to ride over the gaps between
// fragments of a busy stream, short enough to cost nothing when waiting.
constexpr int kSpinRounds = 64;
// Progress calls per round before commands are looked at again.
constexpr int kMaxProgressPerRound = 64;
// Sleeping with operations in flight still wakes this often, so that UCX's
// timers (keepalive, retries) run.
constexpr int kBusyTickMs = 100;
// UCX's keepalive round (unless UCX_KEEPALIVE_INTERVAL says otherwise), and
// how often an idle progress thread with open endpoints wakes to run it.
constexpr char kKeepaliveInterval[] = "1s";
constexpr int kKeepaliveTickMs = 1000;
// How long the destructor lets UCX finish what it cannot interrupt
// (matched receives, close handshakes) before it destroys the worker.
constexpr auto kShutdownGrace = std::chrono::seconds(5);

// ---- public methods (any thread) --------------------------------------------------

Status UcxTransport::Start(const TransportOptions& options) {
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) return Status::Unavailable(std::string("eventfd: ") + std::strerror(errno));
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    return Status::Unavailable(std::string("epoll_create1: ") + std::strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = event_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &ev) != 0) {
    return Status::Unavailable(std::string("epoll_ctl: ") + std::strerror(errno));
  }
  auto started = std::make_shared<std::promise<Status>>();
  std::future<Status> result = started->get_future();
  thread_ = std::thread([this, options, started] { Run(options, started.get()); });
  Status status = result.get();
  if (!status.ok()) {
    thread_.join();  // Run returned after reporting the failure
  }
  return status;
}

UcxTransport::~UcxTransport() {
  if (thread_.joinable()) {
    if (OnProgressThread()) {
      std::fprintf(stderr, "holdfast transport: destroyed from its own completion callback\n");
      std::abort();
    }
    Command stop;
    stop.kind = Command::Kind::kStop;
    Push(std::move(stop));
    thread_.join();
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (event_fd_ >= 0) close(event_fd_);
}

Result<Transport::EndpointId> UcxTransport::Connect(const std::string& worker_address) {
  Result<std::string> ucx_address = UnwrapAddress(worker_address);
  if (!ucx_address.ok()) return ucx_address.status();
  if (OnProgressThread()) return DoConnect(*ucx_address);
  auto reply = std::make_shared<std::promise<Result<EndpointId>>>();
  std::future<Result<EndpointId>> result = reply->get_future();
  Command command;
  command.kind = Command::Kind::kConnect;
  command.ucx_address = std::move(ucx_address).value();
  command.reply = reply;
  Push(std::move(command));
  return result.get();
}

bool UcxTransport::Failed(EndpointId endpoint) const {
  std::lock_guard lock(failed_mu_);
  return failed_ids_.count(endpoint) != 0;
}

void UcxTransport::Disconnect(EndpointId endpoint) {
  Command command;
  command.kind = Command::Kind::kDisconnect;
  command.endpoint = endpoint;
  Push(std::move(command));
}

Transport::OpId UcxTransport::Send(EndpointId endpoint, uint64_t tag, const void* data,
                                   uint64_t length, Done done) {
  auto op = std::make_unique<Op>();
  op->owner = this;
  op->id = NextOpId();
  op->is_send = true;
  op->endpoint = endpoint;
  op->tag = tag;
  op->buffer = const_cast<void*>(data);  // UCX only reads it
  op->length = length;
  op->done = std::move(done);
  const OpId id = op->id;
  Command command;
  command.kind = Command::Kind::kPost;
  command.op = std::move(op);
  Push(std::move(command));
  return id;
}

Transport::OpId UcxTransport::Recv(uint64_t tag, void* buffer, uint64_t capacity, Done done) {
  auto op = std::make_unique<Op>();
  op->owner = this;
  op->id = NextOpId();
  op->tag = tag;
  op->buffer = buffer;
  op->length = capacity;
  op->done = std::move(done);
  const OpId id = op->id;
  Command command;
  command.kind = Command::Kind::kPost;
  command.op = std::move(op);
  Push(std::move(command));
  return id;
}

void UcxTransport::Cancel(OpId op) {
  Command command;
  command.kind = Command::Kind::kCancel;
  command.op_id = op;
  Push(std::move(command));
}

TransportStats UcxTransport::stats() const {
  TransportStats s;
  s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  s.bytes_received = bytes_received_.load(std::memory_order_relaxed);
  s.sends_failed = sends_failed_.load(std::memory_order_relaxed);
  s.cancelled = cancelled_.load(std::memory_order_relaxed);
  return s;
}

void UcxTransport::Push(Command command) {
  bool was_empty;
  {
    std::lock_guard lock(mu_);
    was_empty = commands_.empty();
    commands_.push_back(std::move(command));
  }
  // The progress thread itself looks at the queue again before it sleeps
  // (commands from callbacks); other threads wake it on the first command
  // of a batch, and the eventfd stays readable until the thread drains it.
  if (was_empty && !OnProgressThread()) Wake();
}

void UcxTransport::Wake() {
  const uint64_t one = 1;
  while (write(event_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

// ---- UCX callbacks ------------------------------------------------------------------

void UcxTransport::OnSendDone(void* /*request*/, ucs_status_t status, void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  op->ucs_status = status;
  op->completed = true;
  op->owner->completed_.push_back(op);
}

void UcxTransport::OnRecvDone(void* /*request*/, ucs_status_t status,
                              const ucp_tag_recv_info_t* info, void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  op->ucs_status = status;
  op->received = info != nullptr ? info->length : 0;
  op->completed = true;
  op->owner->completed_.push_back(op);
}

void UcxTransport::OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  // Closing an endpoint inside UCX's own error path is not allowed: note it
  // and close it once progress has returned.
  static_cast<UcxTransport*>(arg)->failed_handles_.emplace_back(ep, status);
}

void UcxTransport::OnCloseDone(void* request, ucs_status_t /*status*/, void* user_data) {
  --static_cast<UcxTransport*>(user_data)->pending_closes_;
  ucp_request_free(request);
}

// ---- the progress thread --------------------------------------------------------

void UcxTransport::Run(const TransportOptions& options, std::promise<Status>* started) {
  Status status = InitUcx(options);
  if (!status.ok()) {
    DestroyUcx();
    started->set_value(std::move(status));
    return;
  }
  started->set_value(Status::Ok());
  Loop();
  Shutdown();
}

Status UcxTransport::InitUcx(const TransportOptions& options) {
  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) return FromUcs(s, "ucp_config_read").WithContext("UCX init");
  struct Setting {
    const char* name;
    const std::string& value;
  };
  for (const Setting& setting :
       {Setting{"TLS", options.tls}, Setting{"NET_DEVICES", options.net_devices}}) {
    if (setting.value.empty()) continue;
    s = ucp_config_modify(config, setting.name, setting.value.c_str());
    if (s != UCS_OK) {
      ucp_config_release(config);
      return Status::Unavailable("UCX init: UCX_" + std::string(setting.name) + "=" +
                                 setting.value + ": " + UcsMessage(s));
    }
  }
  // UCX's keepalive is what finds a peer endpoint destroyed without its
  // socket closing (see the top of this file); its default round of 20 s
  // would leave such an endpoint failing every transfer for that long.
  if (std::getenv("UCX_KEEPALIVE_INTERVAL") == nullptr) {
    s = ucp_config_modify(config, "KEEPALIVE_INTERVAL", kKeepaliveInterval);
    if (s != UCS_OK) {
      ucp_config_release(config);
      return FromUcs(s, "UCX_KEEPALIVE_INTERVAL").WithContext("UCX init");
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 0;
  s = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (s != UCS_OK) {
    context_ = nullptr;
    return Status::Unavailable("UCX init: ucp_init: " + UcsMessage(s));
  }

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;  // only this thread uses it
  s = ucp_worker_create(context_, &worker_params, &worker_);
  if (s != UCS_OK) {
    worker_ = nullptr;
    return Status::Unavailable("UCX init: ucp_worker_create: " + UcsMessage(s));
  }

  s = ucp_worker_get_efd(worker_, &worker_fd_);
  if (s != UCS_OK) return Status::Unavailable("UCX init: ucp_worker_get_efd: " + UcsMessage(s));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = worker_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, worker_fd_, &ev) != 0) {
    return Status::Unavailable(std::string("UCX init: epoll_ctl: ") + std::strerror(errno));
  }

  ucp_address_t* address = nullptr;
  size_t address_length = 0;
  s = ucp_worker_get_address(worker_, &address, &address_length);
  if (s != UCS_OK) {
    return Status::Unavailable("UCX init: ucp_worker_get_address: " + UcsMessage(s));
  }
  address_ = WrapAddress(address, address_length);
  ucp_worker_release_address(worker_, address);
  return Status::Ok();
}

void UcxTransport::DestroyUcx() {
  if (worker_ != nullptr) {
    ucp_worker_destroy(worker_);
    worker_ = nullptr;
  }
  if (context_ != nullptr) {
    ucp_cleanup(context_);
    context_ = nullptr;
  }
}

void UcxTransport::Loop() {
  int idle_rounds = 0;
  while (!stopping_) {
    bool busy = RunCommands();
    if (stopping_) break;
    for (int i = 0; i < kMaxProgressPerRound && ucp_worker_progress(worker_) != 0; ++i) {
      busy = true;
    }
    HandleFailedEndpoints();
    busy = RunCompletions() || busy;
    if (busy) {
      idle_rounds = 0;
      continue;
    }
    if (!ops_.empty() && ++idle_rounds < kSpinRounds) continue;
    idle_rounds = 0;
    int timeout_ms = kBusyTickMs;
    if (ops_.empty() && pending_closes_ == 0) timeout_ms = endpoints_.empty() ? -1 : kKeepaliveTickMs;
    Sleep(timeout_ms);
  }
}

void UcxTransport::Sleep(int timeout_ms) {
  const ucs_status_t s = ucp_worker_arm(worker_);
  if (s == UCS_ERR_BUSY) return;  // events arrived meanwhile: progress again
  if (s != UCS_OK) {
    // Cannot sleep safely; fall back to a short nap rather than spin.
    spdlog::error("transport: ucp_worker_arm: {}", UcsMessage(s));
    timeout_ms = 1;
  }
  epoll_event events[2];
  const int n = epoll_wait(epoll_fd_, events, 2, timeout_ms);
  for (int i = 0; i < n; ++i) {
    if (events[i].data.fd == event_fd_) {
      uint64_t value;
      [[maybe_unused]] const ssize_t r = read(event_fd_, &value, sizeof(value));
    }
  }
}

bool UcxTransport::RunCommands() {
  std::deque<Command> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(commands_);
  }
  for (Command& command : batch) Execute(command);
  return !batch.empty();
}

void UcxTransport::Execute(Command& command) {
  switch (command.kind) {
    case Command::Kind::kPost:
      Post(std::move(command.op));
      return;
    case Command::Kind::kCancel:
      CancelOp(command.op_id);
      return;
    case Command::Kind::kConnect:
      command.reply->set_value(DoConnect(command.ucx_address));
      return;
    case Command::Kind::kDisconnect:
      DoDisconnect(command.endpoint);
      return;
    case Command::Kind::kStop:
      stopping_ = true;
      return;
  }
}

void UcxTransport::Post(std::unique_ptr<Op> owned) {
  Op* op = owned.get();
  ops_.emplace(op->id, std::move(owned));
  if (stopping_ || worker_ == nullptr) {
    op->override_error = Status::Cancelled("transport is shutting down");
    CompleteNow(op, UCS_ERR_CANCELED);
    return;
  }
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.user_data = op;
  ucs_status_ptr_t request;
  if (op->is_send) {
    auto it = endpoints_.find(op->endpoint);
    if (it == endpoints_.end()) {
      op->override_error =
          Status::InvalidArgument("send: unknown endpoint " + std::to_string(op->endpoint));
      CompleteNow(op, UCS_ERR_INVALID_PARAM);
      return;
    }
    Endpoint& endpoint = it->second;
    if (endpoint.handle == nullptr) {
      op->override_error = endpoint.failure;
      CompleteNow(op, UCS_ERR_NOT_CONNECTED);
      return;
    }
    param.cb.send = &UcxTransport::OnSendDone;
    request = ucp_tag_send_nbx(endpoint.handle, op->buffer, op->length, op->tag, &param);
    if (UCS_PTR_IS_PTR(request)) endpoint.sends.insert(op);
  } else {
    // UCX 1.13 does not fill param.recv_info on immediate completion, so
    // the length of a message already waiting would be lost: have UCX call
    // OnRecvDone (it runs inside ucp_tag_recv_nbx then, and only records).
    param.op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    param.cb.recv = &UcxTransport::OnRecvDone;
    request = ucp_tag_recv_nbx(worker_, op->buffer, op->length, op->tag, ~uint64_t{0}, &param);
  }
  if (UCS_PTR_IS_PTR(request)) {
    op->request = request;  // possibly completed already (then freed in RunCompletions)
  } else {
    // Done at once (eager data copied out, or an immediate error). Still
    // reported from RunCompletions, never from inside Send/Recv.
    CompleteNow(op, UCS_PTR_STATUS(request));
  }
}

void UcxTransport::CompleteNow(Op* op, ucs_status_t status) {
  if (op->completed) return;  // UCX's callback came first
  op->ucs_status = status;
  op->completed = true;
  completed_.push_back(op);
}

void UcxTransport::CancelOp(OpId id) {
  auto it = ops_.find(id);
  if (it == ops_.end()) return;  // finished already, or never existed
  Op* op = it->second.get();
  if (op->completed || op->request == nullptr) return;
  // Only an unmatched receive can be cancelled (see the top of this file);
  // for anything else UCX does nothing and the operation runs to its end.
  if (!op->is_send) {
    op->cancel_requested = true;
    ucp_request_cancel(worker_, op->request);
  }
}

Result<Transport::EndpointId> UcxTransport::DoConnect(const std::string& ucx_address) {
  if (stopping_ || worker_ == nullptr) return Status::Unavailable("transport is shutting down");
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(ucx_address.data());
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = &UcxTransport::OnEndpointError;
  params.err_handler.arg = this;
  ucp_ep_h handle = nullptr;
  const ucs_status_t s = ucp_ep_create(worker_, &params, &handle);
  if (s != UCS_OK) {
    return Status::InvalidArgument("UCX rejected the worker address: " + UcsMessage(s));
  }
  EndpointId id = next_endpoint_id_++;
  if (next_endpoint_id_ == 0) next_endpoint_id_ = 1;
  endpoints_[id].handle = handle;
  endpoint_by_handle_[handle] = id;
  return id;
}

void UcxTransport::DoDisconnect(EndpointId id) {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return;
  Endpoint& endpoint = it->second;
  if (endpoint.handle != nullptr) {
    for (Op* op : endpoint.sends) {
      if (op->override_error.ok()) op->override_error = Status::Cancelled("endpoint disconnected");
    }
    // Always forced (see the top of this file): a graceful close would leave
    // the peer's paired endpoint a zombie, and would wait forever for a send
    // whose receive is never posted.
    endpoint_by_handle_.erase(endpoint.handle);
    ucp_ep_h handle = endpoint.handle;
    endpoint.handle = nullptr;
    CloseHandle(handle);
  }
  // Sends still in flight keep pointers to their Op, not to the endpoint.
  endpoints_.erase(it);
  std::lock_guard lock(failed_mu_);
  failed_ids_.erase(id);
}

void UcxTransport::CloseHandle(ucp_ep_h handle) {
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  param.cb.send = &UcxTransport::OnCloseDone;
  param.user_data = this;
  const ucs_status_ptr_t request = ucp_ep_close_nbx(handle, &param);
  if (UCS_PTR_IS_PTR(request)) ++pending_closes_;
}

void UcxTransport::HandleFailedEndpoints() {
  while (!failed_handles_.empty()) {
    auto failed = std::move(failed_handles_);
    failed_handles_.clear();
    for (const auto& [handle, status] : failed) {
      auto by_handle = endpoint_by_handle_.find(handle);
      if (by_handle == endpoint_by_handle_.end()) continue;  // closed by us already
      const EndpointId id = by_handle->second;
      {
        std::lock_guard lock(failed_mu_);
        failed_ids_.insert(id);
      }
      FailEndpoint(endpoints_.at(id),
                   FromUcs(status, "peer of endpoint " + std::to_string(id) + " failed"));
    }
  }
}

void UcxTransport::FailEndpoint(Endpoint& endpoint, Status failure) {
  if (failure.code() != StatusCode::kUnavailable) {
    failure = Status::Unavailable(failure.message());
  }
  spdlog::warn("transport: {}", failure.message());
  for (Op* op : endpoint.sends) {
    if (op->override_error.ok()) op->override_error = failure;
  }
  endpoint.failure = std::move(failure);
  endpoint_by_handle_.erase(endpoint.handle);
  ucp_ep_h handle = endpoint.handle;
  endpoint.handle = nullptr;
  // UCX's rule for a failed endpoint: close it in force mode.
  CloseHandle(handle);
}

bool UcxTransport::RunCompletions() {
  bool any = false;
  while (!completed_.empty()) {
    std::vector<Op*> batch = std::move(completed_);
    completed_.clear();
    for (Op* op : batch) {
      any = true;
      if (op->request != nullptr) {
        ucp_request_free(op->request);
        op->request = nullptr;
      }
      if (op->is_send) {
        auto ep = endpoints_.find(op->endpoint);
        if (ep != endpoints_.end()) ep->second.sends.erase(op);
      }
      Status status;
      uint64_t bytes = 0;
      if (op->ucs_status == UCS_OK) {
        bytes = op->is_send ? op->length : op->received;
      } else if (!op->override_error.ok()) {
        status = op->override_error;
      } else if (!op->is_send && op->ucs_status == UCS_ERR_CANCELED && !op->cancel_requested) {
        // Nobody here cancelled it: UCX dropped a rendezvous message that
        // arrived on an endpoint already closed here (see the top of this
        // file); its sender must reconnect.
        status = Status::Unavailable(
            "receive: the message came over an endpoint this side has closed (UCX dropped it)");
      } else {
        status = FromUcs(op->ucs_status, op->is_send ? "send" : "receive");
        // A truncated message's own length; UCX's length means nothing
        // for other failures.
        if (op->ucs_status == UCS_ERR_MESSAGE_TRUNCATED) bytes = op->received;
      }
      if (status.ok()) {
        (op->is_send ? bytes_sent_ : bytes_received_).fetch_add(bytes, std::memory_order_relaxed);
      } else if (status.code() == StatusCode::kCancelled) {
        cancelled_.fetch_add(1, std::memory_order_relaxed);
      } else if (op->is_send) {
        sends_failed_.fetch_add(1, std::memory_order_relaxed);
      }
      auto node = ops_.extract(op->id);
      if (node.mapped()->done) node.mapped()->done(std::move(status), bytes);
    }
  }
  return any;
}

void UcxTransport::Shutdown() {
  // Interrupt what UCX can interrupt.
  for (auto& [id, op] : ops_) {
    if (!op->completed) op->override_error = Status::Cancelled("transport is shutting down");
    if (!op->is_send && !op->completed && op->request != nullptr) {
      op->cancel_requested = true;
      ucp_request_cancel(worker_, op->request);
    }
  }
  std::vector<EndpointId> ids;
  for (const auto& [id, endpoint] : endpoints_) ids.push_back(id);
  for (EndpointId id : ids) DoDisconnect(id);

  // Let UCX finish the rest (matched receives, close requests) for a while.
  const auto deadline = std::chrono::steady_clock::now() + kShutdownGrace;
  for (;;) {
    bool busy = RunCommands();
    while (ucp_worker_progress(worker_) != 0) busy = true;
    HandleFailedEndpoints();
    busy = RunCompletions() || busy;
    if (ops_.empty() && pending_closes_ == 0) {
      std::lock_guard lock(mu_);
      if (commands_.empty()) break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      spdlog::warn(
          "transport: {} operations and {} endpoint closes still in flight after {} s; "
          "destroying the worker",
          ops_.size(), pending_closes_,
          std::chrono::duration_cast<std::chrono::seconds>(kShutdownGrace).count());
      break;
    }
    if (!busy) Sleep(kBusyTickMs);
  }

  // Nothing writes into or reads from user buffers once the worker is gone,
  // so whatever is left can be finished here. Its requests went with the
  // worker.
  ucp_worker_destroy(worker_);
  worker_ = nullptr;
  for (auto& [id, op] : ops_) {
    op->request = nullptr;
    if (!op->completed) CompleteNow(op.get(), UCS_ERR_CANCELED);
  }
  endpoints_.clear();
  endpoint_by_handle_.clear();
  failed_handles_.clear();
  // Callbacks may still post operations (they finish CANCELLED at once).
  for (;;) {
    const bool busy = RunCommands();
    if (!RunCompletions() && !busy) break;
  }
  ucp_cleanup(context_);
  context_ = nullptr;
}

}  // namespace

Result<std::unique_ptr<Transport>> Transport::Create(const TransportOptions& options) {
  auto transport = std::make_unique<UcxTransport>();
  HOLDFAST_RETURN_IF_ERROR(transport->Start(options));
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace holdfast::smp
