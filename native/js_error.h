// A failed system call as a JavaScript Error: the one-line message from describe(),
// `code` ('EBUSY'), `errno` (negative, as in Node's own errors) and `syscall`; and the
// TypeError of a wrapped class constructed from JS.
#pragma once

#include <napi.h>

#include "errors.h"

namespace ubloop {

inline Napi::Error makeError(Napi::Env env, const SysError &e) {
  Napi::Error err = Napi::Error::New(env, describe(e));
  err.Set("code", Napi::String::New(env, errnoName(e.err)));
  err.Set("errno", Napi::Number::New(env, -e.err));
  err.Set("syscall", Napi::String::New(env, e.op));
  return err;
}

// The native object behind a wrapped class: its constructor's first argument, an
// External only the addon passes. From JS (no External) throws TypeError(message),
// unless an exception is already pending, and returns null.
template <typename T>
T *externalArg(const Napi::CallbackInfo &cb, const char *message) {
  if (cb.Length() < 1 || !cb[0].IsExternal()) {
    if (!cb.Env().IsExceptionPending()) Napi::TypeError::New(cb.Env(), message).ThrowAsJavaScriptException();
    return nullptr;
  }
  return cb[0].As<Napi::External<T>>().Data();
}

}  // namespace ubloop
