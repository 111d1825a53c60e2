// CUSE loop-control in an addon built without libfuse3 (binding.gyp builds this file
// instead of cuse_loop_control.cc when `pkg-config --exists fuse3` fails, or when
// UBLOOP_WITHOUT_FUSE=1): the same exports, reporting themselves unavailable.
#include <napi.h>

#include <cerrno>

#include "cuse_loop_control.h"

namespace ubloop {
namespace {

constexpr const char *kUnavailable = "CUSE loop-control unavailable: ubloop was built without libfuse3";

Napi::Value noCuseDevice(const Napi::CallbackInfo &cb) {
  Napi::TypeError::New(cb.Env(), "NativeCuseDevice is created by createCuseDevice()").ThrowAsJavaScriptException();
  return cb.Env().Undefined();
}

Napi::Value createCuseDevice(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  Napi::Error err = Napi::Error::New(env, kUnavailable);
  err.Set("code", "ENOTSUP");
  err.Set("errno", Napi::Number::New(env, -ENOTSUP));
  err.Set("syscall", "createCuseDevice");
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(err.Value());
  return deferred.Promise();
}

}  // namespace

void registerLoopControl(Napi::Env env, Napi::Object exports, JobRunner &) {
  exports.Set("cuseAvailable", false);
  exports.Set("NativeCuseDevice", Napi::Function::New(env, noCuseDevice, "NativeCuseDevice"));
  exports.Set("createCuseDevice", Napi::Function::New(env, createCuseDevice, "createCuseDevice"));
}

}  // namespace ubloop
