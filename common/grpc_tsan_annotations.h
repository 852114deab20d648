// Debian's gRPC is not built with ThreadSanitizer, so TSan cannot see the order gRPC guarantees
// between a reactor's calls into gRPC (its constructor returning, StartWrite, StartRead, Finish,
// StartCall) and the reactions gRPC runs later on its own threads (OnWriteDone, OnReadDone,
// OnCancel, OnDone), on the server's reactors and the gateway's client ones alike. These two calls
// tell it, and only that: a release where we hand the reactor to gRPC, an acquire where gRPC
// hands it back. Outside TSan builds they are nothing.
#pragma once

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

// On a reactor's destructor, whose own body only resets the vtable pointer: gRPC reads that
// pointer (virtual calls) on its threads before it calls OnDone, in an order TSan cannot see.
// The members' destructors stay instrumented.
#define ACCLLM_REACTOR_DESTRUCTOR __attribute__((no_sanitize("thread")))

namespace accllm {

inline void HandedToGrpc([[maybe_unused]] void* reactor) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(reactor);
#endif
}

inline void CalledBackByGrpc([[maybe_unused]] void* reactor) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(reactor);
#endif
}

}  // namespace accllm
