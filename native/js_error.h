// A failed system call as a JavaScript Error: the one-line message from describe(),
// `code` ('EBUSY'), `errno` (negative, as in Node's own errors) and `syscall`.
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

}  // namespace ubloop
