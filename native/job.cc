#include "job.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <mutex>

#include "js_error.h"

namespace ubloop {

// Lives as long as the process: a job thread may finish after its environment is gone.
struct JobRunner::State {
  std::mutex mutex;
  bool alive = true;            // false once the environment's cleanup hook ran
  napi_threadsafe_function tsfn = nullptr;
  size_t outstanding = 0;       // JS thread only: jobs started and not yet settled
};

struct JobRunner::Started {
  State *state;
  PromiseJob *job;
};

namespace {

// Node unloads an addon when the last environment that loaded it goes (a worker that
// ends): a job thread still running would then execute unmapped code. Loading this
// library once more with RTLD_NODELETE keeps it mapped for the life of the process.
void pinLibrary() {
  static const bool pinned = [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&pinLibrary), &info) == 0 || info.dli_fname == nullptr) return false;
    return dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) != nullptr;
  }();
  (void)pinned;
}

}  // namespace

JobRunner *JobRunner::create(Napi::Env env) {
  pinLibrary();
  auto *runner = new JobRunner();
  runner->state_ = new State();
  napi_value name = Napi::String::New(env, "ubloopJob");
  napi_status s = napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, runner->state_,
                                                  complete, &runner->state_->tsfn);
  NAPI_FATAL_IF_FAILED(s, "JobRunner::create", "napi_create_threadsafe_function");
  napi_unref_threadsafe_function(env, runner->state_->tsfn);
  // Hooks run in reverse order: this one before the thread-safe function's own, so no
  // job thread calls it once node starts freeing it.
  napi_add_env_cleanup_hook(
      env,
      [](void *arg) {
        auto *state = static_cast<State *>(arg);
        std::lock_guard<std::mutex> lock(state->mutex);
        state->alive = false;
      },
      runner->state_);
  return runner;
}

Napi::Value JobRunner::start(Napi::Env env, std::unique_ptr<PromiseJob> job) {
  Napi::Promise promise = job->deferred_.Promise();
  auto *started = new Started{state_, job.get()};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  const int err = pthread_create(&thread, &attr, threadMain, started);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    delete started;
    job->deferred_.Reject(makeError(env, SysError::from(err, "pthread_create", "no thread for a control command")).Value());
    return promise;
  }
  job.release();  // the thread owns it now
  if (state_->outstanding++ == 0) napi_ref_threadsafe_function(env, state_->tsfn);
  return promise;
}

void *JobRunner::threadMain(void *arg) {
  std::unique_ptr<Started> started(static_cast<Started *>(arg));
  // Signals are for the JS thread.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  PromiseJob *job = started->job;
  job->error_ = job->work();
  State *state = started->state;
  bool delivered = false;
  {
    std::lock_guard<std::mutex> lock(state->mutex);
    delivered = state->alive && napi_call_threadsafe_function(state->tsfn, job, napi_tsfn_nonblocking) == napi_ok;
  }
  if (!delivered) job->abandon();
  return nullptr;
}

// JS thread (or, with env null, the environment's teardown for a job still queued).
void JobRunner::complete(napi_env rawEnv, napi_value, void *context, void *data) {
  auto *job = static_cast<PromiseJob *>(data);
  if (rawEnv == nullptr) {
    job->abandon();
    return;
  }
  std::unique_ptr<PromiseJob> owned(job);
  auto *state = static_cast<State *>(context);
  Napi::Env env(rawEnv);
  Napi::HandleScope scope(env);
  if (job->error_) {
    job->deferred_.Reject(makeError(env, *job->error_).Value());
  } else {
    Napi::Value value = job->settle(env);
    if (env.IsExceptionPending())
      job->deferred_.Reject(env.GetAndClearPendingException().Value());
    else
      job->deferred_.Resolve(value);
  }
  if (--state->outstanding == 0) napi_unref_threadsafe_function(rawEnv, state->tsfn);
}

}  // namespace ubloop
