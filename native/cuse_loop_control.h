// The native side of an instance's loop-control: a CUSE character device whose ioctls
// are answered by a JavaScript handler (createCuseDevice, NativeCuseDevice), and
// ioctlInt() for the client side.
#pragma once

#include <napi.h>

namespace ubloop {

void registerLoopControl(Napi::Env env, Napi::Object exports);

}  // namespace ubloop
