// Blocking control commands (START_DEV, STOP_DEV, DEL_DEV, the CUSE handshakes) run as
// jobs on threads of the engine's own, one detached thread per job, never on libuv's
// pool: a few STOP_DEVs stuck on a hung backing filesystem must not stall every other
// create and remove, nor node's own fs calls. Each job settles a Promise on the JS
// thread through the environment's one thread-safe function.
#pragma once

#include <napi.h>

#include <memory>
#include <optional>
#include <utility>

#include "errors.h"

namespace ubloop {

class JobRunner;

// A job whose work() runs on its own thread and whose result settles a promise.
class PromiseJob {
 public:
  explicit PromiseJob(Napi::Env env) : deferred_(Napi::Promise::Deferred::New(env)) {}
  virtual ~PromiseJob() = default;
  PromiseJob(const PromiseJob &) = delete;
  PromiseJob &operator=(const PromiseJob &) = delete;

 protected:
  // The job's own thread: the blocking part. No JS here.
  virtual std::optional<SysError> work() = 0;
  // JS thread, after work() succeeded: the value the promise resolves to.
  virtual Napi::Value settle(Napi::Env env) { return env.Undefined(); }
  // The environment went away before the promise could be settled: undo what work()
  // left behind, without JS. The job is then leaked, never destroyed, as its JS
  // handles can no longer be released.
  virtual void abandon() {}

 private:
  friend class JobRunner;
  Napi::Promise::Deferred deferred_;
  std::optional<SysError> error_;
};

// One per environment: starts jobs and settles their promises on its JS thread.
class JobRunner {
 public:
  // Must be called once per environment, from the addon's init.
  static JobRunner *create(Napi::Env env);

  // Runs job->work() on a new thread; returns the promise that settle() resolves (or
  // work()'s error rejects). Rejects with EAGAIN when no thread can be started.
  Napi::Value start(Napi::Env env, std::unique_ptr<PromiseJob> job);

  template <typename Job, typename... Args>
  Napi::Value run(Napi::Env env, Args &&...args) {
    return start(env, std::make_unique<Job>(env, std::forward<Args>(args)...));
  }

 private:
  struct State;
  struct Started;
  static void *threadMain(void *arg);
  static void complete(napi_env env, napi_value, void *context, void *data);
  State *state_ = nullptr;
};

}  // namespace ubloop
