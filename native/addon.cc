// The N-API surface of ubloop: a flat table of functions plus the NativeDevice class.
// Every argument is validated in TypeScript first (lib/device-options.ts); here we only
// re-check what would be unsafe to get wrong. Blocking control commands run as jobs on
// threads of their own (native/job.h) and settle a Promise; nothing here runs per I/O.
//
// The declarations for this module are hand-written in native/index.d.ts: keep them in
// step with the exports below.
#include <napi.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cmath>
#include <memory>
#include <string>

#include "cuse_loop_control.h"
#include "device.h"
#include "env_state.h"
#include "errors.h"
#include "job.h"
#include "js_error.h"
#include "ublk_control.h"
#include "ublk_flags.h"
#include "unix_socket.h"

namespace ubloop {
namespace {

Napi::Value bigU64(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

// The ublk op of a failed request, as the stats name it.
const char *ublkOpName(uint8_t op) {
  switch (op) {
    case UBLK_IO_OP_READ: return "read";
    case UBLK_IO_OP_WRITE: return "write";
    case UBLK_IO_OP_FLUSH: return "flush";
    case UBLK_IO_OP_DISCARD: return "discard";
    case UBLK_IO_OP_WRITE_ZEROES: return "write-zeroes";
    default: return "other";
  }
}

// The devices an environment serves, which its cleanup hook stops and deletes if JS
// did not.
struct DeviceRegistry : LiveSet<std::shared_ptr<Device>> {
  void cleanup() {
    teardownAll([](const std::shared_ptr<Device> &d) { d->remove(); });
  }
};

struct AddonData {
  Napi::FunctionReference deviceConstructor;
  DeviceRegistry *registry;  // never freed: a job thread may finish after the environment
  JobRunner *jobs;
};

AddonData &addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

template <typename Job, typename... Args>
Napi::Value startJob(Napi::Env env, Args &&...args) {
  return addonData(env).jobs->run<Job>(env, std::forward<Args>(args)...);
}

Napi::Object infoObject(Napi::Env env, const ublksrv_ctrl_dev_info &info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", info.dev_id);
  o.Set("queues", info.nr_hw_queues);
  o.Set("depth", info.queue_depth);
  o.Set("state", info.state == UBLK_S_DEV_LIVE       ? "live"
                 : info.state == UBLK_S_DEV_QUIESCED ? "quiesced"
                 : info.state == UBLK_S_DEV_FAIL_IO  ? "fail-io"
                                                     : "dead");
  o.Set("maxIoBytes", info.max_io_buf_bytes);
  o.Set("serverPid", info.ublksrv_pid);
  o.Set("ownerUid", abi::ownerUid(info));
  o.Set("ownerGid", abi::ownerGid(info));
  o.Set("flags", bigU64(env, info.flags));
  return o;
}

// ---------------------------------------------------------------- NativeDevice

class NativeDevice : public Napi::ObjectWrap<NativeDevice> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeDevice",
                       {
                           InstanceAccessor<&NativeDevice::getId>("id"),
                           InstanceMethod<&NativeDevice::info>("info"),
                           InstanceMethod<&NativeDevice::stats>("stats"),
                           InstanceMethod<&NativeDevice::remove>("remove"),
                           InstanceMethod<&NativeDevice::resize>("resize"),
                           InstanceMethod<&NativeDevice::handOver>("handOver"),
                       });
  }

  explicit NativeDevice(const Napi::CallbackInfo &cb) : Napi::ObjectWrap<NativeDevice>(cb) {
    if (auto *d = externalArg<std::shared_ptr<Device>>(cb, "NativeDevice is created by createDevice()")) device_ = *d;
  }

 private:
  Napi::Value getId(const Napi::CallbackInfo &cb) { return Napi::Number::New(cb.Env(), device_->id()); }

  Napi::Value info(const Napi::CallbackInfo &cb) {
    Napi::Env env = cb.Env();
    Napi::Object o = infoObject(env, device_->info());
    const DeviceSpec &s = device_->spec();
    o.Set("target", s.target == TargetKind::Null ? "null" : "loop");
    o.Set("size", Napi::Number::New(env, double(device_->size())));
    struct stat st {};
    const bool image = s.backingFd >= 0 && fstat(s.backingFd, &st) == 0;
    o.Set("imageSize", image ? Napi::Value(Napi::Number::New(env, double(st.st_size))) : env.Null());
    // The image's last name is gone (unlinked while served): the open descriptor keeps
    // the inode, and the device, working, as with kernel loop.
    o.Set("imageDeleted", image && S_ISREG(st.st_mode) && st.st_nlink == 0);
    o.Set("offset", Napi::Number::New(env, double(s.offset)));
    o.Set("blockSize", s.blockSize);
    o.Set("readOnly", s.readOnly);
    o.Set("encoding", kernelSupport().encoding == abi::Encoding::Ioctl ? "ioctl" : "legacy");
    o.Set("dataPath", dataPathName(s.dataPath));
    o.Set("removed", device_->removed());
    return o;
  }

  Napi::Value stats(const Napi::CallbackInfo &cb) {
    Napi::Env env = cb.Env();
    std::vector<QueueSnapshot> snaps = device_->snapshot();
    Napi::Array arr = Napi::Array::New(env, snaps.size());
    for (size_t i = 0; i < snaps.size(); i++) {
      const QueueSnapshot &q = snaps[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("queue", Napi::Number::New(env, double(i)));
      o.Set("ops", Napi::Number::New(env, double(q.ops)));
      o.Set("bytesRead", Napi::Number::New(env, double(q.bytesRead)));
      o.Set("bytesWritten", Napi::Number::New(env, double(q.bytesWritten)));
      o.Set("errors", Napi::Number::New(env, double(q.errors)));
      o.Set("ringEnters", Napi::Number::New(env, double(q.enters)));
      o.Set("bufferReleases", Napi::Number::New(env, double(q.bufferReleases)));
      o.Set("registrations", Napi::Number::New(env, double(q.registrations)));
      o.Set("readErrors", Napi::Number::New(env, double(q.readErrors)));
      o.Set("writeErrors", Napi::Number::New(env, double(q.writeErrors)));
      o.Set("flushErrors", Napi::Number::New(env, double(q.flushErrors)));
      o.Set("discardErrors", Napi::Number::New(env, double(q.discardErrors)));
      if (q.lastErrno != 0) {
        Napi::Object last = Napi::Object::New(env);
        last.Set("errno", q.lastErrno);
        const char *code = strerrorname_np(q.lastErrno);
        last.Set("code", code != nullptr ? code : "UNKNOWN");
        last.Set("op", ublkOpName(q.lastErrorOp));
        last.Set("atMs", Napi::Number::New(env, double(q.lastErrorAtMs)));
        o.Set("lastError", last);
      } else {
        o.Set("lastError", env.Null());
      }
      o.Set("threadId", q.tid);
      o.Set("ringFlags", q.ringFlags);
      o.Set("failure", q.failure ? makeError(env, *q.failure).Value() : env.Null());
      arr.Set(uint32_t(i), o);
    }
    return arr;
  }

  Napi::Value remove(const Napi::CallbackInfo &cb);
  Napi::Value resize(const Napi::CallbackInfo &cb);
  Napi::Value handOver(const Napi::CallbackInfo &cb);

  std::shared_ptr<Device> device_;
};

class RemoveJob : public PromiseJob {
 public:
  RemoveJob(Napi::Env env, std::shared_ptr<Device> d, bool onlyIfUnused)
      : PromiseJob(env), device_(std::move(d)), registry_(*addonData(env).registry), onlyIfUnused_(onlyIfUnused) {}

 protected:
  std::optional<SysError> work() override {
    auto err = device_->remove(onlyIfUnused_);
    if (device_->removed()) registry_.forget(device_);
    return err;
  }

 private:
  std::shared_ptr<Device> device_;
  DeviceRegistry &registry_;
  bool onlyIfUnused_;
};

Napi::Value NativeDevice::remove(const Napi::CallbackInfo &cb) {
  const bool onlyIfUnused = cb.Length() > 0 && cb[0].IsObject() && cb[0].As<Napi::Object>().Get("onlyIfUnused").ToBoolean();
  return startJob<RemoveJob>(cb.Env(), device_, onlyIfUnused);
}

class HandOverJob : public PromiseJob {
 public:
  HandOverJob(Napi::Env env, std::shared_ptr<Device> d, uint64_t timeoutMs)
      : PromiseJob(env), device_(std::move(d)), registry_(*addonData(env).registry), timeoutMs_(timeoutMs) {}

 protected:
  std::optional<SysError> work() override {
    auto err = device_->handOver(timeoutMs_);
    if (!err) registry_.forget(device_);
    return err;
  }

 private:
  std::shared_ptr<Device> device_;
  DeviceRegistry &registry_;
  uint64_t timeoutMs_;
};

Napi::Value NativeDevice::handOver(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  if (cb.Length() < 1 || !cb[0].IsNumber() || cb[0].As<Napi::Number>().DoubleValue() < 0) {
    Napi::RangeError::New(env, "handOver: expected a timeout in ms (0: none)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return startJob<HandOverJob>(env, device_, uint64_t(cb[0].As<Napi::Number>().DoubleValue()));
}

class ResizeJob : public PromiseJob {
 public:
  ResizeJob(Napi::Env env, std::shared_ptr<Device> d, uint64_t bytes) : PromiseJob(env), device_(std::move(d)), bytes_(bytes) {}

 protected:
  std::optional<SysError> work() override { return device_->resize(bytes_); }

 private:
  std::shared_ptr<Device> device_;
  uint64_t bytes_;
};

Napi::Value NativeDevice::resize(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  if (cb.Length() < 1 || !cb[0].IsNumber() || cb[0].As<Napi::Number>().DoubleValue() <= 0 ||
      std::fmod(cb[0].As<Napi::Number>().DoubleValue(), 512.0) != 0) {
    Napi::RangeError::New(env, "resize: expected a positive size in bytes, a multiple of 512").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return startJob<ResizeJob>(env, device_, uint64_t(cb[0].As<Napi::Number>().DoubleValue()));
}

// Creates a device (Device::create) or takes one over from a dead server (Device::recover).
class CreateJob : public PromiseJob {
 public:
  using Make = Result<std::unique_ptr<Device>> (*)(DeviceSpec spec);
  CreateJob(Napi::Env env, DeviceSpec spec, Make make)
      : PromiseJob(env), spec_(std::move(spec)), make_(make), registry_(*addonData(env).registry) {}

 protected:
  std::optional<SysError> work() override {
    Result<std::unique_ptr<Device>> r = make_(spec_);
    if (!r.ok()) return r.error;
    device_ = std::shared_ptr<Device>(std::move(*r.value));
    registry_.add(device_);
    return std::nullopt;
  }
  // No one is left to hand the device to: the registry's cleanup may already have run.
  void abandon() override {
    if (!device_) return;
    device_->remove();
    registry_.forget(device_);
    device_.reset();
  }
  Napi::Value settle(Napi::Env env) override {
    auto *holder = new std::shared_ptr<Device>(device_);
    auto ext = Napi::External<std::shared_ptr<Device>>::New(
        env, holder, [](Napi::Env, std::shared_ptr<Device> *h) { delete h; });
    return addonData(env).deviceConstructor.New({ext});
  }

 private:
  DeviceSpec spec_;
  Make make_;
  std::shared_ptr<Device> device_;
  DeviceRegistry &registry_;
};

// A control command on a device by id (one this process may not serve): work(id) on
// the job's thread, its result turned into JS by settle.
template <typename T>
class IdJob : public PromiseJob {
 public:
  using Work = Result<T> (*)(uint32_t id);
  using Settle = Napi::Value (*)(Napi::Env env, const T &value);
  IdJob(Napi::Env env, uint32_t id, Work work, Settle settle) : PromiseJob(env), id_(id), work_(work), settle_(settle) {}

 protected:
  std::optional<SysError> work() override {
    Result<T> r = work_(id_);
    if (!r.ok()) return r.error;
    value_ = std::move(*r.value);
    return std::nullopt;
  }
  Napi::Value settle(Napi::Env env) override { return settle_(env, *value_); }

 private:
  uint32_t id_;
  Work work_;
  Settle settle_;
  std::optional<T> value_;
};

// Stops and deletes a device this process does not serve (one left by a dead server).
Result<Unit> stopAndDelete(uint32_t id) {
  (void)UblkControl::stop(id);  // already stopped is fine: DEL_DEV says what matters
  return UblkControl::remove(id);
}

Napi::Value undefinedValue(Napi::Env env, const Unit &) { return env.Undefined(); }

// ---------------------------------------------------------------- flat exports

uint64_t u64(const Napi::Object &o, const char *key) {
  Napi::Value v = o.Get(key);
  if (v.IsBigInt()) {
    bool lossless = true;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
}

bool requireNumbers(Napi::Env env, const Napi::Object &o, std::initializer_list<const char *> keys) {
  for (const char *k : keys) {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber() && !v.IsBigInt()) {
      Napi::TypeError::New(env, std::string("createDevice: option '") + k + "' must be a number")
          .ThrowAsJavaScriptException();
      return false;
    }
  }
  return true;
}

// The options object of createDevice / recoverDevice as a DeviceSpec (with its own dup
// of the image's descriptor), or nothing after throwing.
std::optional<DeviceSpec> specFrom(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  if (cb.Length() < 1 || !cb[0].IsObject()) {
    Napi::TypeError::New(env, "createDevice: expected an options object").ThrowAsJavaScriptException();
    return std::nullopt;
  }
  Napi::Object o = cb[0].As<Napi::Object>();
  if (!requireNumbers(env, o, {"id", "fd", "offset", "size", "queues", "depth", "blockSize", "maxIoBytes", "flags",
                              "pollUs"}))
    return std::nullopt;
  DeviceSpec s;
  s.id = o.Get("id").As<Napi::Number>().Int32Value();
  std::string target = o.Get("target").ToString();
  s.target = target == "null" ? TargetKind::Null : TargetKind::Loop;
  int fd = o.Get("fd").As<Napi::Number>().Int32Value();
  s.offset = u64(o, "offset");
  s.size = u64(o, "size");
  s.readOnly = o.Get("readOnly").ToBoolean();
  s.queues = uint16_t(o.Get("queues").As<Napi::Number>().Uint32Value());
  s.depth = uint16_t(o.Get("depth").As<Napi::Number>().Uint32Value());
  s.blockSize = o.Get("blockSize").As<Napi::Number>().Uint32Value();
  s.maxIoBytes = o.Get("maxIoBytes").As<Napi::Number>().Uint32Value();
  s.flags = u64(o, "flags");
  s.discard = o.Get("discard").ToBoolean();
  s.pollUs = o.Get("pollUs").As<Napi::Number>().Uint32Value();
  const std::string copy = o.Has("copy") && !o.Get("copy").IsUndefined() ? o.Get("copy").ToString().Utf8Value() : "auto";
  bool knownCopy = false;
  for (DataPath p : {DataPath::Auto, DataPath::KernelCopy, DataPath::UserCopy, DataPath::ZeroCopy, DataPath::AutoBufReg}) {
    if (copy == dataPathName(p)) {
      s.copy = p;
      knownCopy = true;
    }
  }
  if (!knownCopy) {
    Napi::RangeError::New(env, "createDevice: copy must be one of auto, kernel, user, zero, auto-buf, got '" + copy + "'")
        .ThrowAsJavaScriptException();
    return std::nullopt;
  }

  const bool sane = (target == "loop" || target == "null") && (s.target == TargetKind::Null || fd >= 0) &&
                    s.queues >= 1 && s.depth >= 1 && s.depth <= UBLK_MAX_QUEUE_DEPTH &&
                    (s.blockSize == 512 || s.blockSize == 1024 || s.blockSize == 2048 || s.blockSize == 4096) &&
                    s.size > 0 && s.size % s.blockSize == 0 && s.maxIoBytes >= 4096 && s.maxIoBytes % 4096 == 0;
  if (!sane) {
    Napi::RangeError::New(env, "createDevice: invalid device options").ThrowAsJavaScriptException();
    return std::nullopt;
  }
  if (s.target == TargetKind::Loop) {
    // The device keeps its own descriptor; the caller may close theirs at once.
    s.backingFd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (s.backingFd < 0) {
      makeError(env, SysError::from(errno, "dup backing fd")).ThrowAsJavaScriptException();
      return std::nullopt;
    }
  }
  return s;
}

Napi::Value createDevice(const Napi::CallbackInfo &cb) {
  std::optional<DeviceSpec> s = specFrom(cb);
  if (!s) return cb.Env().Undefined();
  return startJob<CreateJob>(cb.Env(), std::move(*s), &Device::create);
}

Napi::Value recoverDevice(const Napi::CallbackInfo &cb) {
  std::optional<DeviceSpec> s = specFrom(cb);
  if (!s) return cb.Env().Undefined();
  if (s->id < 0) {
    if (s->backingFd >= 0) close(s->backingFd);
    Napi::RangeError::New(cb.Env(), "recoverDevice: id must name the device to recover").ThrowAsJavaScriptException();
    return cb.Env().Undefined();
  }
  return startJob<CreateJob>(cb.Env(), std::move(*s), &Device::recover);
}


Napi::Value probeKernel(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  const KernelSupport &ks = kernelSupport();
  Napi::Object o = Napi::Object::New(env);
  o.Set("present", ks.present);
  o.Set("controlError", ks.present ? env.Null() : Napi::Value(Napi::String::New(env, errnoName(ks.openErrno))));
  o.Set("encoding", ks.encoding == abi::Encoding::Ioctl ? "ioctl" : "legacy");
  o.Set("features", ks.features ? bigU64(env, *ks.features) : env.Null());
  return o;
}

// fn(id): starts IdJob<T> for a device id argument.
template <typename T>
Napi::Value idCommand(const Napi::CallbackInfo &cb, const char *fn, typename IdJob<T>::Work work,
                      typename IdJob<T>::Settle settle) {
  Napi::Env env = cb.Env();
  if (cb.Length() < 1 || !cb[0].IsNumber() || cb[0].As<Napi::Number>().Int64Value() < 0) {
    Napi::TypeError::New(env, std::string(fn) + ": expected a device id").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return startJob<IdJob<T>>(env, cb[0].As<Napi::Number>().Uint32Value(), work, settle);
}

Napi::Value getDeviceInfo(const Napi::CallbackInfo &cb) {
  return idCommand<ublksrv_ctrl_dev_info>(
      cb, "getDeviceInfo", UblkControl::getInfo,
      [](Napi::Env env, const ublksrv_ctrl_dev_info &info) -> Napi::Value { return infoObject(env, info); });
}

Napi::Value deleteDevice(const Napi::CallbackInfo &cb) { return idCommand<Unit>(cb, "deleteDevice", stopAndDelete, undefinedValue); }

// mknod(path, mode, type, major, minor): one syscall on the JS thread, no child process.
// mode's permission bits are filtered by the umask as mknod(2) does.
Napi::Value makeNode(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  const bool ok = cb.Length() == 5 && cb[0].IsString() && cb[1].IsNumber() && cb[2].IsString() && cb[3].IsNumber() &&
                  cb[4].IsNumber();
  const std::string type = ok ? cb[2].As<Napi::String>().Utf8Value() : "";
  if (!ok || (type != "b" && type != "c")) {
    Napi::TypeError::New(env, "mknod(path, mode, 'b' | 'c', major, minor): bad arguments").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const std::string path = cb[0].As<Napi::String>().Utf8Value();
  const mode_t mode = (cb[1].As<Napi::Number>().Uint32Value() & 07777) | (type == "b" ? S_IFBLK : S_IFCHR);
  const dev_t dev = makedev(cb[3].As<Napi::Number>().Uint32Value(), cb[4].As<Napi::Number>().Uint32Value());
  if (::mknod(path.c_str(), mode, dev) < 0) {
    Napi::Error err = makeError(env, SysError::from(errno, "mknod", path));
    err.Set("path", path);
    err.ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// process.exit() does not run environment cleanup hooks, so lib/native.ts calls this
// from the 'exit' event: every device this environment still serves is stopped and
// deleted before the process goes (blocking, as the process is ending anyway).
Napi::Value removeAllDevicesSync(const Napi::CallbackInfo &cb) {
  addonData(cb.Env()).registry->cleanup();
  return cb.Env().Undefined();
}

// [[name, bit], ...] from native/ublk_flags.h.
Napi::Array ublkFlags(Napi::Env env) {
  Napi::Array out = Napi::Array::New(env, std::size(flags::kTable));
  uint32_t i = 0;
  for (const flags::Flag &f : flags::kTable) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, f.name);
    pair.Set(1u, f.bit);
    out.Set(i++, pair);
  }
  return out;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = NativeDevice::define(env);
  // The job runner first: its cleanup hook must run after the registry's (hooks run in
  // reverse), so that devices are stopped while job threads can still report.
  JobRunner *jobs = JobRunner::create(env);
  auto *data = new AddonData{Napi::Persistent(ctor), newEnvState<DeviceRegistry>(env), jobs};
  env.SetInstanceData<AddonData>(data);

  exports.Set("NativeDevice", ctor);
  exports.Set("createDevice", Napi::Function::New(env, createDevice, "createDevice"));
  exports.Set("recoverDevice", Napi::Function::New(env, recoverDevice, "recoverDevice"));
  exports.Set("probeKernel", Napi::Function::New(env, probeKernel, "probeKernel"));
  exports.Set("getDeviceInfo", Napi::Function::New(env, getDeviceInfo, "getDeviceInfo"));
  exports.Set("deleteDevice", Napi::Function::New(env, deleteDevice, "deleteDevice"));
  exports.Set("mknod", Napi::Function::New(env, makeNode, "mknod"));
  exports.Set("removeAllDevicesSync", Napi::Function::New(env, removeAllDevicesSync, "removeAllDevicesSync"));
  exports.Set("ublkFlags", ublkFlags(env));
  registerLoopControl(env, exports, *jobs);
  registerUnixSocket(env, exports);
  return exports;
}

}  // namespace
}  // namespace ubloop

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return ubloop::init(env, exports); }

NODE_API_MODULE(ubloop, InitModule)
