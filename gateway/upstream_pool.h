// The daemons behind the gateway. Each `--upstream host:port` is resolved to addresses (a
// Kubernetes headless Service gives one per pod) and re-resolved periodically; every address is
// one upstream with its own channel, watched with grpc.health.v1 Watch. Requests go to the
// SERVING upstream of their model with the fewest outstanding streams.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "accllm/v1/generation.grpc.pb.h"

namespace accllm::gateway {

struct UpstreamTls {
  bool enabled = false;
  std::string ca_file;    // empty: the system's roots
  std::string cert_file;  // with key_file: a client certificate (mTLS)
  std::string key_file;
};

struct UpstreamPoolOptions {
  std::vector<std::string> targets;  // host:port, each resolved to one upstream per address
  std::chrono::milliseconds resolve_interval{10000};
  std::chrono::milliseconds retry_interval{1000};  // after a health watch or model query fails
  UpstreamTls tls;
};

// What an upstream serves, as its ModelInfo says.
struct UpstreamModel {
  std::string name;
  int context_length = 0;
  int lambda_sinks = 0;
  int lambda_window = 0;
  std::string chat_template;
};

class Upstream {
 public:
  enum class State { kUnknown, kServing, kNotServing };

  Upstream(std::string address, std::string target_name, std::shared_ptr<grpc::Channel> channel);
  const std::string& address() const { return address_; }
  accllm::v1::Generation::Stub& stub() { return *stub_; }
  State state() const { return state_.load(); }
  int outstanding() const { return outstanding_.load(); }
  std::optional<UpstreamModel> model() const;

  // A stream in flight on this upstream: counted for picking.
  struct Lease {
    std::shared_ptr<Upstream> upstream;
    Lease(std::shared_ptr<Upstream> u) : upstream(std::move(u)) { upstream->outstanding_.fetch_add(1); }
    ~Lease() { upstream->outstanding_.fetch_sub(1); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
  };

 private:
  friend class UpstreamPool;
  friend class HealthWatch;
  std::string address_;
  std::string target_name_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<accllm::v1::Generation::Stub> stub_;
  std::atomic<State> state_{State::kUnknown};
  std::atomic<int> outstanding_{0};
  mutable std::mutex mutex_;
  std::optional<UpstreamModel> model_;  // guarded by mutex_; set once SERVING and asked
  std::atomic<bool> watching_{false};   // a health watch is open
  grpc::ClientContext* watch_context_ = nullptr;  // guarded by mutex_: the open watch's
  std::chrono::steady_clock::time_point retry_after_;  // guarded by mutex_
};

class UpstreamPool {
 public:
  static absl::StatusOr<std::unique_ptr<UpstreamPool>> Create(const UpstreamPoolOptions& options);
  ~UpstreamPool();  // stops watching

  // The SERVING upstream serving `model` with the fewest outstanding streams, other than
  // `exclude`; null when there is none.
  std::shared_ptr<Upstream> Pick(const std::string& model, const Upstream* exclude = nullptr) const;
  // Every model a SERVING upstream serves (one entry per name).
  std::vector<UpstreamModel> Models() const;
  bool AnyServing() const;
  std::vector<std::shared_ptr<Upstream>> Upstreams() const;
  // Runs the resolution and health maintenance now (tests; otherwise periodic).
  void Refresh();

 private:
  explicit UpstreamPool(const UpstreamPoolOptions& options, std::shared_ptr<grpc::ChannelCredentials> credentials);
  void Maintain();
  void Resolve();
  void StartWatch(const std::shared_ptr<Upstream>& upstream);
  void FetchModel(const std::shared_ptr<Upstream>& upstream);

  UpstreamPoolOptions options_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Upstream>> upstreams_;  // guarded by mutex_
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mutex_
  std::chrono::steady_clock::time_point next_resolve_;
  std::shared_ptr<std::atomic<int>> open_calls_ = std::make_shared<std::atomic<int>>(0);
  std::thread thread_;
};

}  // namespace accllm::gateway
