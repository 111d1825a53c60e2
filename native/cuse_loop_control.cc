// A CUSE character device answered in JavaScript: the device behind an instance's
// loop-control.
//
// libfuse3's cuse_lowlevel speaks the protocol. createCuseDevice opens /dev/cuse and
// completes the CUSE_INIT handshake on a job thread (once it is done /dev/<devName>
// exists), then one native thread per device reads requests from /dev/cuse. Each ioctl
// goes to the JS handler through a thread-safe function and is answered when the
// handler's number or promise settles, so replies may go out in any order. close()
// wakes that thread through an eventfd, joins it, answers whatever is still pending
// with ENODEV and closes /dev/cuse, which removes the device.
//
// We run our own loop instead of libfuse's: fuse_session_loop blocks in read() and
// cuse_lowlevel_setup installs process-wide signal handlers, neither of which belongs
// in a Node process.
#define FUSE_USE_VERSION 31
#include <cuse_lowlevel.h>
#include <fcntl.h>
#include <napi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cuse_loop_control.h"
#include "env_state.h"
#include "errors.h"
#include "job.h"
#include "js_error.h"

namespace ubloop {
namespace {

// One ioctl on its way from the session thread to the JS handler.
struct IoctlCall {
  uint64_t id;
  uint32_t cmd;
  int64_t arg;
  uint32_t uid, gid, pid;
};

class CuseDevice;
void callHandler(Napi::Env env, Napi::Function handler, CuseDevice *device, IoctlCall *call);
using HandlerTsfn = Napi::TypedThreadSafeFunction<CuseDevice, IoctlCall, callHandler>;

ssize_t ioRead(int fd, void *buf, size_t len, void *) { return ::read(fd, buf, len); }
ssize_t ioWritev(int fd, struct iovec *iov, int count, void *) { return ::writev(fd, iov, count); }

class CuseDevice : public std::enable_shared_from_this<CuseDevice> {
 public:
  explicit CuseDevice(std::string name) : name_(std::move(name)) {}
  ~CuseDevice() {
    if (thread_.joinable()) thread_.detach();  // not reached: shutdown() joins first
    if (session_) fuse_session_destroy(session_);
    if (wakeFd_ >= 0) ::close(wakeFd_);
  }

  const std::string &name() const { return name_; }
  unsigned major() const { return major_; }
  unsigned minor() const { return minor_; }

  // Pool thread: open /dev/cuse and answer CUSE_INIT; afterwards /dev/<name> exists.
  std::optional<SysError> open() {
    // The kernel refuses a taken name by aborting the connection; name the problem first.
    if (access(("/sys/class/cuse/" + name_).c_str(), F_OK) == 0)
      return SysError::from(EEXIST, "create CUSE device", "/dev/" + name_ + " is already served");
    const int fd = ::open("/dev/cuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return SysError::from(errno, "open /dev/cuse");

    const std::string info = "DEVNAME=" + name_;
    const char *infoArgv[] = {info.c_str()};
    cuse_info ci{};
    ci.dev_info_argc = 1;
    ci.dev_info_argv = infoArgv;
    static const cuse_lowlevel_ops ops = [] {
      cuse_lowlevel_ops o{};
      o.init_done = onInitDone;
      o.open = onOpen;
      o.read = onRead;
      o.write = onWrite;
      o.ioctl = onIoctl;
      return o;
    }();
    char program[] = "ubloop";
    char *argv[] = {program, nullptr};
    fuse_args args = FUSE_ARGS_INIT(1, argv);
    session_ = cuse_lowlevel_new(&args, &ci, &ops, this);
    fuse_opt_free_args(&args);
    if (!session_) {
      ::close(fd);
      return SysError::from(ENOMEM, "cuse_lowlevel_new");
    }
    static const fuse_custom_io io = {.writev = ioWritev, .read = ioRead, .splice_receive = nullptr,
                                      .splice_send = nullptr};
    if (int r = fuse_session_custom_io(session_, &io, fd); r < 0) {
      ::close(fd);
      return SysError::from(-r, "fuse_session_custom_io");
    }
    wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakeFd_ < 0) return SysError::from(errno, "eventfd");

    if (auto err = handshake(fd)) return err;
    // A refused name or device number aborts the connection rather than failing our reply.
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)))
      return SysError::from(EEXIST, "create CUSE device", "the kernel refused /dev/" + name_);
    return readDevNumbers();
  }

  // JS thread: serve requests on a new thread, which calls `handler` for each ioctl.
  void start(HandlerTsfn handler) {
    handler_ = handler;
    thread_ = std::thread([this] { serve(); });
  }

  // Any thread: answer request `id` with a result (>= 0) or a negative errno. A request
  // already answered (or answered with ENODEV by shutdown()) is ignored.
  void reply(uint64_t id, int result) {
    std::lock_guard<std::mutex> lock(pendingMutex_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    fuse_req_t req = it->second;
    pending_.erase(it);
    if (result >= 0)
      fuse_reply_ioctl(req, result, nullptr, 0);
    else
      fuse_reply_err(req, -result);
  }

  // The handler is not called for a request already answered by shutdown().
  bool isPending(uint64_t id) {
    std::lock_guard<std::mutex> lock(pendingMutex_);
    return pending_.count(id) != 0;
  }

  // Any thread but the session thread: stop serving, answer what is pending with ENODEV
  // and close /dev/cuse, which removes the device. Idempotent.
  void shutdown() {
    std::lock_guard<std::mutex> life(lifeMutex_);
    if (wakeFd_ >= 0) {
      const uint64_t one = 1;
      (void)!::write(wakeFd_, &one, sizeof one);
    }
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(pendingMutex_);
    for (auto &[id, req] : pending_) fuse_reply_err(req, ENODEV);
    pending_.clear();
    if (session_) fuse_session_destroy(session_);
    session_ = nullptr;
    if (wakeFd_ >= 0) ::close(wakeFd_);
    wakeFd_ = -1;
  }

 private:
  // Reads and processes requests until CUSE_INIT has been answered (5 s at most).
  std::optional<SysError> handshake(int fd) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    fuse_buf buf{};
    std::optional<SysError> err;
    while (!initDone_ && !err) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                              std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        err = SysError::from(ETIMEDOUT, "CUSE_INIT", "no handshake from the kernel");
        break;
      }
      pollfd p{fd, POLLIN, 0};
      const int n = poll(&p, 1, int(left.count()));
      if (n < 0 && errno != EINTR) err = SysError::from(errno, "poll /dev/cuse");
      if (n <= 0) continue;
      const int r = fuse_session_receive_buf(session_, &buf);
      if (r == -EAGAIN || r == -EINTR) continue;
      if (r <= 0) {
        err = SysError::from(r < 0 ? -r : ECONNABORTED, "read /dev/cuse");
        break;
      }
      fuse_session_process_buf(session_, &buf);
    }
    free(buf.mem);
    return err;
  }

  std::optional<SysError> readDevNumbers() {
    const std::string path = "/sys/class/cuse/" + name_ + "/dev";
    FILE *f = fopen(path.c_str(), "re");
    if (!f) return SysError::from(errno, "open " + path);
    const int got = fscanf(f, "%u:%u", &major_, &minor_);
    fclose(f);
    if (got != 2) return SysError::from(EIO, "read " + path, "expected MAJOR:MINOR");
    return std::nullopt;
  }

  void serve() {
    // Signals are for the JS thread.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    const int fd = fuse_session_fd(session_);
    fuse_buf buf{};
    for (;;) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents != 0) break;                                  // shutdown()
      if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) break;      // connection aborted
      const int r = fuse_session_receive_buf(session_, &buf);
      if (r == -EAGAIN || r == -EINTR) continue;                       // the request went away
      if (r <= 0) break;
      fuse_session_process_buf(session_, &buf);
    }
    free(buf.mem);
    handler_.Release();
  }

  static CuseDevice *of(fuse_req_t req) { return static_cast<CuseDevice *>(fuse_req_userdata(req)); }

  static void onInitDone(void *userdata) { static_cast<CuseDevice *>(userdata)->initDone_ = true; }
  static void onOpen(fuse_req_t req, fuse_file_info *fi) { fuse_reply_open(req, fi); }
  // Like the kernel's loop-control, which has neither read nor write.
  static void onRead(fuse_req_t req, size_t, off_t, fuse_file_info *) { fuse_reply_err(req, EINVAL); }
  static void onWrite(fuse_req_t req, const char *, size_t, off_t, fuse_file_info *) {
    fuse_reply_err(req, EINVAL);
  }

  // Session thread. Restricted ioctls carry the argument by value, which is all the
  // loop-control commands use.
  static void onIoctl(fuse_req_t req, int cmd, void *arg, fuse_file_info *, unsigned, const void *, size_t,
                      size_t) {
    CuseDevice *self = of(req);
    const fuse_ctx *ctx = fuse_req_ctx(req);
    auto *call = new IoctlCall{0, uint32_t(cmd), int64_t(intptr_t(arg)), ctx->uid, ctx->gid, uint32_t(ctx->pid)};
    {
      std::lock_guard<std::mutex> lock(self->pendingMutex_);
      call->id = self->nextId_++;
      self->pending_.emplace(call->id, req);
    }
    const uint64_t id = call->id;
    if (self->handler_.NonBlockingCall(call) != napi_ok) {
      delete call;
      self->reply(id, -ENODEV);
    }
  }

  const std::string name_;
  unsigned major_ = 0, minor_ = 0;
  fuse_session *session_ = nullptr;
  int wakeFd_ = -1;
  bool initDone_ = false;
  HandlerTsfn handler_;
  std::thread thread_;
  std::mutex lifeMutex_;     // serialises shutdown()
  std::mutex pendingMutex_;  // pending_, nextId_, and replies against session teardown
  std::map<uint64_t, fuse_req_t> pending_;
  uint64_t nextId_ = 1;
};

// ---------------------------------------------------------------- JS side

// Per environment: the NativeCuseDevice constructor and the devices it still serves,
// which the cleanup hook stops so that process exit never hangs on a session thread.
struct CuseEnv {
  Napi::FunctionReference ctor;
  JobRunner *jobs = nullptr;
  LiveSet<std::shared_ptr<CuseDevice>> live;

  void cleanup() {
    live.teardownAll([](const std::shared_ptr<CuseDevice> &d) { d->shutdown(); });
    ctor.Reset();
  }
};

struct DeviceRef {
  std::shared_ptr<CuseDevice> device;
  CuseEnv *cuseEnv;
};

// The handler's answer as an ioctl result: an integer >= 0, or a negative errno.
// Anything else is a bug in the handler and answers EIO.
int toResult(Napi::Value v) {
  if (!v.IsNumber()) return -EIO;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d != std::trunc(d) || d < -4095 || d > INT_MAX) return -EIO;
  return int(d);
}

void callHandler(Napi::Env env, Napi::Function handler, CuseDevice *device, IoctlCall *raw) {
  std::unique_ptr<IoctlCall> call(raw);
  const uint64_t id = call->id;
  // Torn down or closed: shutdown() answers what is pending.
  if (env == nullptr || !device->isPending(id)) return;
  std::shared_ptr<CuseDevice> self = device->shared_from_this();
  Napi::HandleScope scope(env);
  Napi::Object req = Napi::Object::New(env);
  req.Set("cmd", Napi::Number::New(env, call->cmd));
  req.Set("arg", Napi::Number::New(env, double(call->arg)));
  req.Set("uid", Napi::Number::New(env, call->uid));
  req.Set("gid", Napi::Number::New(env, call->gid));
  req.Set("pid", Napi::Number::New(env, call->pid));
  Napi::Value result = handler.Call({req});
  if (env.IsExceptionPending()) {
    env.GetAndClearPendingException();
    self->reply(id, -EIO);
    return;
  }
  if (!result.IsPromise()) {
    self->reply(id, toResult(result));
    return;
  }
  Napi::Function fulfilled =
      Napi::Function::New(env, [self, id](const Napi::CallbackInfo &cb) { self->reply(id, toResult(cb[0])); });
  Napi::Function rejected = Napi::Function::New(env, [self, id](const Napi::CallbackInfo &) { self->reply(id, -EIO); });
  result.As<Napi::Object>().Get("then").As<Napi::Function>().Call(result, {fulfilled, rejected});
  if (env.IsExceptionPending()) {
    env.GetAndClearPendingException();
    self->reply(id, -EIO);
  }
}

// Runs on the JS thread once the session thread has released the handler: the session
// is over (closed, or aborted by the kernel), so this join does not wait.
void finalizeHandler(Napi::Env, DeviceRef *ref, CuseDevice *) {
  ref->device->shutdown();
  ref->cuseEnv->live.forget(ref->device);
  delete ref;
}

class NativeCuseDevice : public Napi::ObjectWrap<NativeCuseDevice> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeCuseDevice",
                       {
                           InstanceAccessor<&NativeCuseDevice::devName>("devName"),
                           InstanceAccessor<&NativeCuseDevice::major>("major"),
                           InstanceAccessor<&NativeCuseDevice::minor>("minor"),
                           InstanceMethod<&NativeCuseDevice::close>("close"),
                       });
  }

  explicit NativeCuseDevice(const Napi::CallbackInfo &cb) : Napi::ObjectWrap<NativeCuseDevice>(cb) {
    if (auto *ref = externalArg<DeviceRef>(cb, "NativeCuseDevice is created by createCuseDevice()")) ref_ = *ref;
  }

 private:
  Napi::Value devName(const Napi::CallbackInfo &cb) { return Napi::String::New(cb.Env(), ref_.device->name()); }
  Napi::Value major(const Napi::CallbackInfo &cb) { return Napi::Number::New(cb.Env(), ref_.device->major()); }
  Napi::Value minor(const Napi::CallbackInfo &cb) { return Napi::Number::New(cb.Env(), ref_.device->minor()); }
  Napi::Value close(const Napi::CallbackInfo &cb);

  DeviceRef ref_;
};

class CloseJob : public PromiseJob {
 public:
  CloseJob(Napi::Env env, DeviceRef ref) : PromiseJob(env), ref_(std::move(ref)) {}

 private:
  std::optional<SysError> work() override {
    ref_.device->shutdown();
    ref_.cuseEnv->live.forget(ref_.device);
    return std::nullopt;
  }

  DeviceRef ref_;
};

Napi::Value NativeCuseDevice::close(const Napi::CallbackInfo &cb) {
  return ref_.cuseEnv->jobs->run<CloseJob>(cb.Env(), ref_);
}

// Opens /dev/cuse and completes the CUSE_INIT handshake on a job thread, then starts
// serving on the JS thread. On failure the device goes with the job, closing /dev/cuse.
class CreateJob : public PromiseJob {
 public:
  CreateJob(Napi::Env env, CuseEnv *cuseEnv, std::string name, Napi::Function handler)
      : PromiseJob(env), cuseEnv_(cuseEnv), device_(std::make_shared<CuseDevice>(std::move(name))),
        handler_(Napi::Persistent(handler)) {}

 private:
  std::optional<SysError> work() override { return device_->open(); }
  Napi::Value settle(Napi::Env env) override {
    HandlerTsfn tsfn = HandlerTsfn::New(env, handler_.Value(), "ubloopCuseIoctl", 0, 1, device_.get(),
                                        finalizeHandler, new DeviceRef{device_, cuseEnv_});
    cuseEnv_->live.add(device_);
    device_->start(tsfn);
    auto ext = Napi::External<DeviceRef>::New(env, new DeviceRef{device_, cuseEnv_},
                                              [](Napi::Env, DeviceRef *r) { delete r; });
    return cuseEnv_->ctor.New({ext});
  }
  // Never served: closing /dev/cuse removes the half-made device.
  void abandon() override { device_->shutdown(); }

  CuseEnv *cuseEnv_;
  std::shared_ptr<CuseDevice> device_;
  Napi::FunctionReference handler_;
};

bool validDevName(const std::string &name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  for (char c : name)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

Napi::Value createCuseDevice(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  if (cb.Length() < 2 || !cb[0].IsString() || !cb[1].IsFunction()) {
    Napi::TypeError::New(env, "createCuseDevice(devName, handler): expected a string and a function")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = cb[0].As<Napi::String>().Utf8Value();
  if (!validDevName(name)) {
    Napi::TypeError::New(env, "createCuseDevice: invalid device name '" + name +
                                  "' (1-128 characters of A-Z a-z 0-9 . _ -)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto *cuseEnv = static_cast<CuseEnv *>(cb.Data());
  return cuseEnv->jobs->run<CreateJob>(env, cuseEnv, std::move(name), cb[1].As<Napi::Function>());
}

}  // namespace

void registerLoopControl(Napi::Env env, Napi::Object exports, JobRunner &jobs) {
  auto *cuseEnv = newEnvState<CuseEnv>(env);
  cuseEnv->jobs = &jobs;
  Napi::Function ctor = NativeCuseDevice::define(env);
  cuseEnv->ctor = Napi::Persistent(ctor);
  exports.Set("cuseAvailable", true);
  exports.Set("NativeCuseDevice", ctor);
  exports.Set("createCuseDevice", Napi::Function::New(env, createCuseDevice, "createCuseDevice", cuseEnv));
}

}  // namespace ubloop
