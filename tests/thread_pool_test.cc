#include "runtime/cpu/thread_pool.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <set>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/cpu/cpu_placement.h"

namespace accllm {
namespace {

// Every index of [0, n) exactly once, in ranges that are neither empty nor out of bounds.
void ExpectEachIndexOnce(ThreadPool& pool, int64_t n) {
  std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
  std::atomic<bool> bad_range{false};
  pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
    if (begin < 0 || end > n || begin >= end) bad_range = true;
    for (int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
  });
  EXPECT_FALSE(bad_range) << "n=" << n;
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<std::size_t>(i)].load(), 1) << "n=" << n << " i=" << i;
}

// Every allowed CPU once; with pinning, each thread that runs chunks runs on exactly one CPU of
// the first `threads` in that order (the caller included), and the loops still cover every index.
TEST(ThreadPoolTest, PinnedThreadsRunOnTheirOwnCpus) {
  const std::vector<int> order = PlacementOrder();
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  ASSERT_EQ(static_cast<int>(order.size()), CPU_COUNT(&allowed));
  EXPECT_EQ(std::set<int>(order.begin(), order.end()).size(), order.size());
  const int threads = std::min<int>(2, static_cast<int>(order.size()));
  std::thread caller([&] {  // pinning the test's main thread would outlive the test
    ThreadPool pool(threads, /*pin=*/true);
    std::mutex mutex;
    std::set<int> cpus;
    bool single = true;
    for (int loop = 0; loop < 50; ++loop) {
      pool.ParallelFor(64, [&](int64_t, int64_t) {
        cpu_set_t mine;
        sched_getaffinity(0, sizeof mine, &mine);
        std::lock_guard<std::mutex> lock(mutex);
        single = single && CPU_COUNT(&mine) == 1;
        cpus.insert(sched_getcpu());
      });
    }
    EXPECT_TRUE(single);
    for (int cpu : cpus) {
      EXPECT_NE(std::find(order.begin(), order.begin() + threads, cpu), order.begin() + threads) << cpu;
    }
    ExpectEachIndexOnce(pool, 1000);
  });
  caller.join();
}

TEST(ThreadPoolTest, EveryIndexOnceForAnySizeAndThreadCount) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (int64_t n : {0, 1, 2, 3, 7, 31, 32, 33, 1000, 100003}) ExpectEachIndexOnce(pool, n);
  }
}

// More pools than cores, each driven from its own thread, thousands of short loops each: the
// situation of tests running side by side in CI.
TEST(ThreadPoolTest, OversubscribedPoolsRunManyShortLoops) {
  constexpr int kPools = 3, kLoops = 2000;
  std::vector<std::thread> drivers;
  std::atomic<int> wrong{0};
  for (int p = 0; p < kPools; ++p) {
    drivers.emplace_back([&, p] {
      ThreadPool pool(4);
      std::vector<int> values(64 + p);
      for (int loop = 0; loop < kLoops; ++loop) {
        pool.ParallelFor(static_cast<int64_t>(values.size()), [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) ++values[static_cast<std::size_t>(i)];
        });
      }
      for (int v : values) wrong += v != kLoops;
    });
  }
  for (std::thread& t : drivers) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

// A worker stuck inside its first chunk (as if the kernel had descheduled it) holds up only that
// chunk: the caller runs all the others, the rest of the worker's own share included.
TEST(ThreadPoolTest, TheCallerTakesOverTheShareOfAStalledWorker) {
  ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  constexpr int64_t kN = 64;
  std::mutex mutex;
  std::condition_variable changed;
  int64_t done_by_caller = 0, done_by_worker = 0;
  bool worker_stalled = false, released = false;
  pool.ParallelFor(kN, [&](int64_t begin, int64_t end) {
    std::unique_lock<std::mutex> lock(mutex);
    if (std::this_thread::get_id() == caller) {
      // Once the worker is stuck in a chunk of its own.
      changed.wait_for(lock, std::chrono::seconds(20), [&] { return worker_stalled; });
      done_by_caller += end - begin;
      changed.notify_all();
      return;
    }
    if (!worker_stalled) {
      // The worker's first chunk: wait until the caller has done all the others.
      worker_stalled = true;
      changed.notify_all();
      released = changed.wait_for(lock, std::chrono::seconds(20), [&] { return done_by_caller == kN - (end - begin); });
    }
    done_by_worker += end - begin;
  });
  EXPECT_EQ(done_by_caller + done_by_worker, kN);
  EXPECT_TRUE(worker_stalled) << "the worker never got a chunk";
  if (worker_stalled) {
    EXPECT_TRUE(released) << "the caller did " << done_by_caller << " of " << kN << " while the worker was stalled";
    EXPECT_GE(done_by_caller, kN * 3 / 4) << "the stalled worker held up more than its first chunk";
  }
}

}  // namespace
}  // namespace accllm
