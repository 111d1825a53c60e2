// The native side of an instance's loop-control: a CUSE character device whose ioctls
// are answered by a JavaScript handler (createCuseDevice, NativeCuseDevice).
//
// Built from cuse_loop_control.cc when libfuse3 is there; otherwise from
// cuse_unavailable.cc, whose createCuseDevice rejects with ENOTSUP (binding.gyp).
#pragma once

#include <napi.h>

namespace ubloop {

class JobRunner;

// Sets cuseAvailable, NativeCuseDevice and createCuseDevice on exports.
void registerLoopControl(Napi::Env env, Napi::Object exports, JobRunner &jobs);

}  // namespace ubloop
