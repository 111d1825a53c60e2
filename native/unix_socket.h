// Unix stream sockets with peer credentials and file-descriptor passing (listenUnix,
// connectUnix, NativeUnixServer, NativeUnixConnection), driven by the JS thread's loop.
#pragma once

#include <napi.h>

namespace ubloop {

void registerUnixSocket(Napi::Env env, Napi::Object exports);

}  // namespace ubloop
