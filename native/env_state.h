// What native code keeps per Node environment (the main thread and each worker that
// loads the addon have their own): the objects still live there, which the
// environment's cleanup hook tears down if JS did not.
#pragma once

#include <napi.h>

#include <mutex>
#include <set>
#include <utility>

namespace ubloop {

// A set of live objects, safe to change from any thread.
template <typename T>
class LiveSet {
 public:
  void add(const T &x) {
    std::lock_guard<std::mutex> lock(mutex_);
    items_.insert(x);
  }
  void forget(const T &x) {
    std::lock_guard<std::mutex> lock(mutex_);
    items_.erase(x);
  }
  // Empties the set, then calls teardown(x) on each former member, outside the lock
  // (a teardown may block, or forget itself).
  template <typename F>
  void teardownAll(F teardown) {
    std::set<T> items;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      items.swap(items_);
    }
    for (const T &x : items) teardown(x);
  }

 private:
  std::mutex mutex_;
  std::set<T> items_;
};

// A new State for env whose cleanup() runs as the environment's cleanup hook. It is
// never freed: finalizers that run after the hook may still reach it.
template <typename State>
State *newEnvState(Napi::Env env) {
  auto *state = new State();
  napi_add_env_cleanup_hook(env, [](void *s) { static_cast<State *>(s)->cleanup(); }, state);
  return state;
}

}  // namespace ubloop
