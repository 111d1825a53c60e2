// Test-only helpers, kept out of the production addon: build/Release/ubloop_test.node,
// loaded by test/helpers/test-addon.ts.
#include <napi.h>
#include <sys/ioctl.h>

#include <cstdio>

#include "errors.h"
#include "js_error.h"

namespace {

// ioctl(fd, cmd, arg) with an integer argument, synchronously on the JS thread: the
// client side of loop-control (the kernel's /dev/loop-control, an instance's CUSE one).
Napi::Value ioctlInt(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  if (cb.Length() < 3 || !cb[0].IsNumber() || !cb[1].IsNumber() || !cb[2].IsNumber()) {
    Napi::TypeError::New(env, "ioctlInt(fd, cmd, arg): expected three numbers").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int fd = cb[0].As<Napi::Number>().Int32Value();
  const auto cmd = static_cast<unsigned long>(static_cast<uint32_t>(cb[1].As<Napi::Number>().Int64Value()));
  const long arg = static_cast<long>(cb[2].As<Napi::Number>().Int64Value());
  const int r = ::ioctl(fd, cmd, arg);
  if (r < 0) {
    char detail[64];
    snprintf(detail, sizeof detail, "cmd 0x%lx on fd %d", cmd, fd);
    ubloop::makeError(env, ubloop::SysError::from(errno, "ioctl", detail)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, r);
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("ioctlInt", Napi::Function::New(env, ioctlInt, "ioctlInt"));
  return exports;
}

}  // namespace

NODE_API_MODULE(ubloop_test, init)
