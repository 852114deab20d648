// One Generate stream to a daemon, placed on the least loaded upstream serving the model. A call
// refused before its first message (UNAVAILABLE, RESOURCE_EXHAUSTED) is retried once on another
// upstream. Cancel ends it at once: the daemon sees the cancellation and frees the sequence.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "accllm/v1/generation.grpc.pb.h"
#include "gateway/upstream_pool.h"

namespace accllm::gateway {

class UpstreamCall : public std::enable_shared_from_this<UpstreamCall> {
 public:
  struct Callbacks {
    std::function<void(const accllm::v1::GenerateResponse&)> on_response;  // in order, on gRPC threads
    std::function<void(const grpc::Status&)> on_done;                      // once, after the last response
    std::function<void()> on_retry;                                        // a refused call goes elsewhere
  };

  // Starts the call; on_done may run before this returns (no upstream serves the model).
  static std::shared_ptr<UpstreamCall> Start(UpstreamPool& pool, const std::string& model,
                                             accllm::v1::GenerateRequest request, Callbacks callbacks);
  void Cancel();
  // Calls still running, process-wide (shutdown waits for none).
  static int Open();

  class Attempt;

 private:
  UpstreamCall(UpstreamPool& pool, std::string model, accllm::v1::GenerateRequest request, Callbacks callbacks)
      : pool_(pool), model_(std::move(model)), request_(std::move(request)), callbacks_(std::move(callbacks)) {}
  void StartAttempt(std::shared_ptr<Upstream> upstream);
  void AttemptDone(const Upstream* upstream, const grpc::Status& status, bool responded);

  UpstreamPool& pool_;
  std::string model_;
  accllm::v1::GenerateRequest request_;
  Callbacks callbacks_;
  std::mutex mutex_;
  grpc::ClientContext* context_ = nullptr;  // guarded by mutex_: the running attempt's
  bool cancelled_ = false;                  // guarded by mutex_
  bool retried_ = false;
};

}  // namespace accllm::gateway
