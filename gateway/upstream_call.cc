#include "gateway/upstream_call.h"

#include <atomic>

#include "common/grpc_tsan_annotations.h"

namespace accllm::gateway {
namespace {
std::atomic<int> g_open{0};
}  // namespace

class UpstreamCall::Attempt final : public grpc::ClientReadReactor<accllm::v1::GenerateResponse> {
 public:
  Attempt(std::shared_ptr<UpstreamCall> owner, std::shared_ptr<Upstream> upstream)
      : owner_(std::move(owner)), lease_(std::move(upstream)) {}
  ACCLLM_REACTOR_DESTRUCTOR ~Attempt() override {}

  grpc::ClientContext* context() { return &context_; }
  void Start() {
    lease_.upstream->stub().async()->Generate(&context_, &owner_->request_, this);
    HandedToGrpc(this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    CalledBackByGrpc(this);
    if (!ok) return;  // OnDone follows
    responded_ = true;
    owner_->callbacks_.on_response(response_);
    HandedToGrpc(this);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    CalledBackByGrpc(this);
    std::shared_ptr<UpstreamCall> owner = std::move(owner_);
    const bool responded = responded_;
    const std::shared_ptr<Upstream> upstream = lease_.upstream;
    {
      std::lock_guard<std::mutex> lock(owner->mutex_);
      owner->context_ = nullptr;
    }
    delete this;  // the lease ends: the upstream's outstanding count drops
    owner->AttemptDone(upstream.get(), status, responded);
  }

 private:
  std::shared_ptr<UpstreamCall> owner_;
  Upstream::Lease lease_;
  grpc::ClientContext context_;
  accllm::v1::GenerateResponse response_;
  bool responded_ = false;
};

std::shared_ptr<UpstreamCall> UpstreamCall::Start(UpstreamPool& pool, const std::string& model,
                                                  accllm::v1::GenerateRequest request, Callbacks callbacks) {
  std::shared_ptr<UpstreamCall> call(new UpstreamCall(pool, model, std::move(request), std::move(callbacks)));
  g_open.fetch_add(1);
  std::shared_ptr<Upstream> upstream = pool.Pick(model);
  if (upstream == nullptr) {
    call->AttemptDone(nullptr, grpc::Status(grpc::StatusCode::UNAVAILABLE, "no upstream serving the model is up"), false);
  } else {
    call->StartAttempt(std::move(upstream));
  }
  return call;
}

void UpstreamCall::StartAttempt(std::shared_ptr<Upstream> upstream) {
  auto* attempt = new Attempt(shared_from_this(), std::move(upstream));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    context_ = attempt->context();
  }
  attempt->Start();  // outside the lock: the attempt may end (and take the lock) at once
  std::lock_guard<std::mutex> lock(mutex_);
  if (cancelled_ && context_ != nullptr) context_->TryCancel();
}

void UpstreamCall::Cancel() {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

void UpstreamCall::AttemptDone(const Upstream* upstream, const grpc::Status& status, bool responded) {
  const bool refused = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled = cancelled_;
  }
  if (upstream != nullptr && refused && !responded && !retried_ && !cancelled) {
    retried_ = true;
    if (std::shared_ptr<Upstream> other = pool_.Pick(model_, upstream)) {
      if (callbacks_.on_retry) callbacks_.on_retry();
      return StartAttempt(std::move(other));
    }
  }
  callbacks_.on_done(status);
  callbacks_ = {};  // let go of whatever the callbacks hold
  g_open.fetch_sub(1);
}

int UpstreamCall::Open() { return g_open.load(); }

}  // namespace accllm::gateway
