#include "gateway/upstream_pool.h"

#include <netdb.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/grpc_tsan_annotations.h"
#include "common/host_port.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace accllm::gateway {
namespace {

using Clock = std::chrono::steady_clock;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct HostPort {
  std::string host;
  int port = 0;
};
absl::StatusOr<HostPort> SplitTarget(const std::string& target) {
  absl::StatusOr<std::pair<std::string, int>> split = SplitHostPort(target);
  if (!split.ok()) return split.status();
  if (split->first.empty() || split->second == 0) {
    return absl::InvalidArgumentError(absl::StrCat("upstream '", target, "' needs a host and a port"));
  }
  return HostPort{split->first, split->second};
}

// Every address `host` resolves to, as gRPC targets ("ipv4:a.b.c.d:port", "ipv6:[…]:port").
std::vector<std::string> ResolveAddresses(const HostPort& hp) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  std::vector<std::string> out;
  const std::string port = std::to_string(hp.port);
  if (getaddrinfo(hp.host.c_str(), port.c_str(), &hints, &found) != 0) return out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, text, sizeof text);
      out.push_back(absl::StrCat("ipv4:", text, ":", port));
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, text, sizeof text);
      out.push_back(absl::StrCat("ipv6:[", text, "]:", port));
    }
  }
  freeaddrinfo(found);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

// grpc.health.v1 Watch on one upstream, for as long as the stream lasts.
class HealthWatch final : public grpc::ClientReadReactor<grpc::health::v1::HealthCheckResponse> {
 public:
  HealthWatch(std::shared_ptr<Upstream> upstream, std::function<void(const std::shared_ptr<Upstream>&)> on_serving,
              std::shared_ptr<std::atomic<int>> open_calls, std::chrono::milliseconds retry)
      : upstream_(std::move(upstream)), on_serving_(std::move(on_serving)), open_calls_(std::move(open_calls)), retry_(retry) {
    open_calls_->fetch_add(1);
    grpc::health::v1::Health::NewStub(upstream_->channel_)->async()->Watch(&context_, &request_, this);
    {
      std::lock_guard<std::mutex> lock(upstream_->mutex_);
      upstream_->watch_context_ = &context_;
    }
    HandedToGrpc(this);
    StartRead(&response_);
    StartCall();
  }
  ACCLLM_REACTOR_DESTRUCTOR ~HealthWatch() override {}

  void OnReadDone(bool ok) override {
    CalledBackByGrpc(this);
    if (!ok) return;  // OnDone follows
    const bool serving = response_.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    upstream_->state_.store(serving ? Upstream::State::kServing : Upstream::State::kNotServing);
    if (serving) on_serving_(upstream_);
    HandedToGrpc(this);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status&) override {
    CalledBackByGrpc(this);
    upstream_->state_.store(Upstream::State::kNotServing);
    {
      std::lock_guard<std::mutex> lock(upstream_->mutex_);
      upstream_->watch_context_ = nullptr;
      upstream_->retry_after_ = Clock::now() + retry_;
    }
    upstream_->watching_.store(false);
    auto open_calls = open_calls_;
    delete this;
    open_calls->fetch_sub(1);
  }

 private:
  std::shared_ptr<Upstream> upstream_;
  std::function<void(const std::shared_ptr<Upstream>&)> on_serving_;
  std::shared_ptr<std::atomic<int>> open_calls_;
  std::chrono::milliseconds retry_;
  grpc::ClientContext context_;
  grpc::health::v1::HealthCheckRequest request_;
  grpc::health::v1::HealthCheckResponse response_;
};

Upstream::Upstream(std::string address, std::string target_name, std::shared_ptr<grpc::Channel> channel)
    : address_(std::move(address)),
      target_name_(std::move(target_name)),
      channel_(std::move(channel)),
      stub_(accllm::v1::Generation::NewStub(channel_)) {}

std::optional<UpstreamModel> Upstream::model() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return model_;
}

absl::StatusOr<std::unique_ptr<UpstreamPool>> UpstreamPool::Create(const UpstreamPoolOptions& options) {
  if (options.targets.empty()) return absl::InvalidArgumentError("at least one upstream is required (--upstream host:port)");
  for (const std::string& t : options.targets) {
    if (absl::Status s = SplitTarget(t).status(); !s.ok()) return s;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls.enabled) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls.ca_file.empty()) {
      absl::StatusOr<std::string> ca = ReadFile(options.tls.ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (options.tls.cert_file.empty() != options.tls.key_file.empty()) {
      return absl::InvalidArgumentError("an upstream client certificate needs both --upstream-tls-cert and --upstream-tls-key");
    }
    if (!options.tls.cert_file.empty()) {
      absl::StatusOr<std::string> cert = ReadFile(options.tls.cert_file), key = ReadFile(options.tls.key_file);
      if (!cert.ok()) return cert.status();
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  std::unique_ptr<UpstreamPool> pool(new UpstreamPool(options, std::move(credentials)));
  pool->Resolve();
  pool->thread_ = std::thread([p = pool.get()] { p->Maintain(); });
  return pool;
}

UpstreamPool::UpstreamPool(const UpstreamPoolOptions& options, std::shared_ptr<grpc::ChannelCredentials> credentials)
    : options_(options), credentials_(std::move(credentials)) {}

UpstreamPool::~UpstreamPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& u : upstreams_) {
        std::lock_guard<std::mutex> ulock(u->mutex_);
        if (u->watch_context_ != nullptr) u->watch_context_->TryCancel();
      }
    }
    if (open_calls_->load() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void UpstreamPool::Resolve() {
  std::vector<std::pair<std::string, std::string>> wanted;  // address, host
  for (const std::string& t : options_.targets) {
    const HostPort hp = *SplitTarget(t);
    for (std::string& a : ResolveAddresses(hp)) wanted.emplace_back(std::move(a), hp.host);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (wanted.empty()) return;  // DNS trouble: keep what there is
  std::vector<std::shared_ptr<Upstream>> next;
  for (const auto& [address, host] : wanted) {
    auto it = std::find_if(upstreams_.begin(), upstreams_.end(), [&a = address](const auto& u) { return u->address() == a; });
    if (it != upstreams_.end()) {
      next.push_back(*it);
      continue;
    }
    grpc::ChannelArguments args;
    if (options_.tls.enabled) args.SetSslTargetNameOverride(host);  // certificates name the host, not the pod IP
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    next.push_back(std::make_shared<Upstream>(address, host, grpc::CreateCustomChannel(address, credentials_, args)));
  }
  for (const auto& u : upstreams_) {  // gone from DNS: stop watching; streams on it finish
    if (std::find(next.begin(), next.end(), u) != next.end()) continue;
    std::lock_guard<std::mutex> ulock(u->mutex_);
    if (u->watch_context_ != nullptr) u->watch_context_->TryCancel();
  }
  upstreams_ = std::move(next);
}

void UpstreamPool::StartWatch(const std::shared_ptr<Upstream>& upstream) {
  upstream->watching_.store(true);
  new HealthWatch(
      upstream, [this](const std::shared_ptr<Upstream>& u) { FetchModel(u); }, open_calls_, options_.retry_interval);
}

void UpstreamPool::FetchModel(const std::shared_ptr<Upstream>& upstream) {
  if (upstream->model().has_value()) return;
  struct Call {
    grpc::ClientContext context;
    accllm::v1::ModelInfoRequest request;
    accllm::v1::ModelInfoResponse response;
  };
  auto call = std::make_shared<Call>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  open_calls_->fetch_add(1);
  HandedToGrpc(call.get());
  upstream->stub().async()->ModelInfo(
      &call->context, &call->request, &call->response, [call, upstream, open = open_calls_](grpc::Status status) {
        CalledBackByGrpc(call.get());
        if (status.ok()) {
          UpstreamModel m{call->response.name(), call->response.context_length(), call->response.lambda_sinks(),
                          call->response.lambda_window(), call->response.chat_template()};
          std::lock_guard<std::mutex> lock(upstream->mutex_);
          upstream->model_ = std::move(m);
        }
        open->fetch_sub(1);
      });
}

void UpstreamPool::Maintain() {
  next_resolve_ = Clock::now() + options_.resolve_interval;
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    Refresh();
    lock.lock();
    wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stopping_; });
  }
}

void UpstreamPool::Refresh() {
  if (Clock::now() >= next_resolve_) {
    Resolve();
    next_resolve_ = Clock::now() + options_.resolve_interval;
  }
  for (const auto& u : Upstreams()) {
    if (!u->watching_.load()) {
      bool due;
      {
        std::lock_guard<std::mutex> lock(u->mutex_);
        due = Clock::now() >= u->retry_after_;
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (due && !stopping_) StartWatch(u);
    } else if (u->state() == Upstream::State::kServing && !u->model().has_value()) {
      FetchModel(u);  // the first query failed
    }
  }
}

std::vector<std::shared_ptr<Upstream>> UpstreamPool::Upstreams() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return upstreams_;
}

std::shared_ptr<Upstream> UpstreamPool::Pick(const std::string& model, const Upstream* exclude) const {
  std::shared_ptr<Upstream> best;
  for (const auto& u : Upstreams()) {
    if (u.get() == exclude || u->state() != Upstream::State::kServing) continue;
    const std::optional<UpstreamModel> m = u->model();
    if (!m || m->name != model) continue;
    if (!best || u->outstanding() < best->outstanding()) best = u;
  }
  return best;
}

std::vector<UpstreamModel> UpstreamPool::Models() const {
  std::map<std::string, UpstreamModel> by_name;
  for (const auto& u : Upstreams()) {
    if (u->state() != Upstream::State::kServing) continue;
    if (std::optional<UpstreamModel> m = u->model()) by_name.emplace(m->name, *m);
  }
  std::vector<UpstreamModel> out;
  for (auto& [name, m] : by_name) out.push_back(std::move(m));
  return out;
}

bool UpstreamPool::AnyServing() const {
  for (const auto& u : Upstreams()) {
    if (u->state() == Upstream::State::kServing) return true;
  }
  return false;
}

}  // namespace accllm::gateway
