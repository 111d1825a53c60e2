// Unix stream sockets for the daemon's control and instance sockets: listen and
// connect, the peer's credentials (SO_PEERCRED) and file descriptors passed along with
// the bytes (SCM_RIGHTS) — what node:net cannot do.
//
// Everything runs on the JS thread: each socket is a uv_poll_t on the main loop, so
// there are no threads, and callbacks are made like any other I/O callback (a handle
// scope, MakeCallback with the socket's async context, a throw goes to
// 'uncaughtException'). Writes that do not fit the socket buffer are queued and sent
// when it drains. Received descriptors are close-on-exec and belong to the receiver.
#include <fcntl.h>
#include <napi.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "env_state.h"
#include "errors.h"
#include "js_error.h"
#include "unix_socket.h"

namespace ubloop {
namespace {

constexpr size_t kMaxFds = 253;  // SCM_MAX_FD: the most one message can carry

// Something with an open socket; the environment's cleanup hook closes it without
// calling back into JS.
struct Closable {
  virtual void teardown() = 0;

 protected:
  ~Closable() = default;
};

// Per environment: the two constructors and the sockets still open.
struct SocketEnv {
  uv_loop_t *loop = nullptr;
  Napi::FunctionReference connectionCtor, serverCtor;
  LiveSet<Closable *> open;

  void cleanup() {
    open.teardownAll([](Closable *c) { c->teardown(); });
    connectionCtor.Reset();
    serverCtor.Reset();
  }
};

// A uv_poll_t whose memory is released in libuv's close callback, which then runs
// `closed` (unless the owner went away first and cleared it).
struct Poller {
  uv_poll_t handle;
  std::function<void(int status, int events)> ready;
  std::function<void()> closed;

  static Poller *start(uv_loop_t *loop, int fd, std::function<void(int, int)> ready) {
    auto *p = new Poller{};
    p->ready = std::move(ready);
    if (int r = uv_poll_init(loop, &p->handle, fd); r < 0) {
      delete p;
      errno = -r;
      return nullptr;
    }
    p->handle.data = p;
    p->watch(UV_READABLE);
    return p;
  }
  void watch(int events) {
    uv_poll_start(&handle, events, [](uv_poll_t *h, int status, int events) {
      auto *p = static_cast<Poller *>(h->data);
      if (p->ready) p->ready(status, events);
    });
  }
  void close() {
    ready = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(&handle), [](uv_handle_t *h) {
      auto *p = static_cast<Poller *>(h->data);
      std::function<void()> closed = std::move(p->closed);
      delete p;
      if (closed) closed();
    });
  }
};

// Calls fn(args...) from a libuv callback; a throw becomes an uncaught exception.
void emit(Napi::Env env, Napi::FunctionReference &fn, napi_value recv, std::initializer_list<napi_value> args,
          Napi::AsyncContext &context) {
  if (fn.IsEmpty()) return;
  fn.MakeCallback(recv, args, context);
  if (env.IsExceptionPending()) napi_fatal_exception(env, env.GetAndClearPendingException().Value());
}

Napi::Object peerObject(Napi::Env env, const ucred &c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, c.pid));
  o.Set("uid", Napi::Number::New(env, c.uid));
  o.Set("gid", Napi::Number::New(env, c.gid));
  return o;
}

bool isHandlers(const Napi::Value &v) {
  if (!v.IsObject()) return false;
  Napi::Object o = v.As<Napi::Object>();
  return o.Get("data").IsFunction() && o.Get("close").IsFunction();
}

// Reads handlers.data and handlers.close once each (a getter may answer differently on
// every read, so what is checked must be what is kept).
bool readHandlers(const Napi::Value &v, Napi::Function &data, Napi::Function &close) {
  if (!v.IsObject()) return false;
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value d = o.Get("data");
  if (d.IsEmpty() || !d.IsFunction()) return false;  // empty: a getter threw
  Napi::Value c = o.Get("close");
  if (c.IsEmpty() || !c.IsFunction()) return false;
  data = d.As<Napi::Function>();
  close = c.As<Napi::Function>();
  return true;
}

// Throws a TypeError unless an exception (e.g. from a handler getter) is already pending.
void throwType(Napi::Env env, const char *message) {
  if (!env.IsExceptionPending()) Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
}

void closeAll(std::vector<int> &fds) {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

// ---------------------------------------------------------------- NativeUnixConnection

struct ConnectionInit {
  SocketEnv *socketEnv;
  int fd;
  ucred peer;
};

class Connection : public Napi::ObjectWrap<Connection>, public Closable {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeUnixConnection",
                       {
                           InstanceAccessor<&Connection::peer>("peer"),
                           InstanceMethod<&Connection::write>("write"),
                           InstanceMethod<&Connection::end>("end"),
                           InstanceMethod<&Connection::destroy>("destroy"),
                       });
  }

  // new NativeUnixConnection(External<ConnectionInit>, handlers): takes ownership of the
  // fd, so every way out that does not open the connection closes it.
  explicit Connection(const Napi::CallbackInfo &cb) : Napi::ObjectWrap<Connection>(cb) {
    Napi::Env env = cb.Env();
    const auto *initArg = externalArg<ConnectionInit>(cb, "NativeUnixConnection is created by listenUnix() or connectUnix()");
    if (!initArg) return;
    const ConnectionInit &init = *initArg;
    socketEnv_ = init.socketEnv;
    fd_ = init.fd;
    peer_ = init.peer;
    Napi::Function data, close;
    if (cb.Length() != 2 || !readHandlers(cb[1], data, close)) {
      abandon();
      throwType(env, "NativeUnixConnection: handlers must be {data, close} functions");
      return;
    }
    onData_ = Napi::Persistent(data);
    onClose_ = Napi::Persistent(close);
    context_ = std::make_unique<Napi::AsyncContext>(env, "UbloopUnixConnection", cb.This().As<Napi::Object>());
    if (env.IsExceptionPending()) {
      abandon();
      return;
    }
    poller_ = Poller::start(socketEnv_->loop, fd_, [this](int status, int events) { ready(status, events); });
    if (!poller_) {
      const int err = errno;
      abandon();
      makeError(env, SysError::from(err, "uv_poll_init")).ThrowAsJavaScriptException();
      return;
    }
    poller_->closed = [this] { closed(); };
    socketEnv_->open.add(this);
    Ref();  // alive while open, whatever JS holds
  }

  ~Connection() override { teardown(); }

  void teardown() override {
    if (closed_ || !poller_) return;  // closed, or never opened
    closed_ = true;
    poller_->closed = nullptr;
    poller_->close();
    ::close(fd_);
    fd_ = -1;
    for (Outgoing &o : queue_) closeAll(o.fds);
    queue_.clear();
    socketEnv_->open.forget(this);
  }

 private:
  struct Outgoing {
    std::string bytes;
    size_t offset = 0;
    std::vector<int> fds;  // our duplicates, sent with the first byte, then closed
  };

  Napi::Value peer(const Napi::CallbackInfo &cb) { return peerObject(cb.Env(), peer_); }

  // The constructor failed before the connection was opened: close the fd it was given.
  void abandon() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    closed_ = true;
  }

  // write(data, fds?): queue and send what the socket takes now. Ignored once closed
  // or ended, like writing to a destroyed stream.
  Napi::Value write(const Napi::CallbackInfo &cb) {
    Napi::Env env = cb.Env();
    Outgoing out;
    if (cb.Length() >= 1 && cb[0].IsString()) {
      out.bytes = cb[0].As<Napi::String>().Utf8Value();
    } else if (cb.Length() >= 1 && cb[0].IsTypedArray() &&
               cb[0].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
      Napi::Uint8Array a = cb[0].As<Napi::Uint8Array>();
      out.bytes.assign(reinterpret_cast<const char *>(a.Data()), a.ByteLength());
    } else {
      Napi::TypeError::New(env, "write(data, fds): data must be a string or a Uint8Array")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (cb.Length() >= 2 && !cb[1].IsUndefined()) {
      if (!dupFds(env, cb[1], out.fds)) return env.Undefined();
      if (out.bytes.empty() && !out.fds.empty()) {
        closeAll(out.fds);
        Napi::RangeError::New(env, "write(data, fds): descriptors need at least one byte of data to travel with")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
    }
    if (closed_ || ending_ || out.bytes.empty()) {
      closeAll(out.fds);
      return env.Undefined();
    }
    queue_.push_back(std::move(out));
    flush();
    return env.Undefined();
  }

  // Duplicates the caller's descriptors so that they may close theirs at once.
  static bool dupFds(Napi::Env env, const Napi::Value &v, std::vector<int> &out) {
    if (!v.IsArray() || v.As<Napi::Array>().Length() > kMaxFds) {
      Napi::TypeError::New(env, "write(data, fds): fds must be an array of at most 253 descriptors")
          .ThrowAsJavaScriptException();
      return false;
    }
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value fd = a.Get(i);
      const double n = fd.IsNumber() ? fd.As<Napi::Number>().DoubleValue() : -1;
      const int dup = (n >= 0 && n <= INT32_MAX && n == double(int(n))) ? fcntl(int(n), F_DUPFD_CLOEXEC, 3) : -1;
      if (dup < 0) {
        const int err = errno;
        closeAll(out);
        if (n < 0 || n != double(int(n)))
          Napi::TypeError::New(env, "write(data, fds): fds[" + std::to_string(i) + "] is not a descriptor")
              .ThrowAsJavaScriptException();
        else
          makeError(env, SysError::from(err, "dup", "fds[" + std::to_string(i) + "] = " + std::to_string(int(n))))
              .ThrowAsJavaScriptException();
        return false;
      }
      out.push_back(dup);
    }
    return true;
  }

  Napi::Value end(const Napi::CallbackInfo &cb) {
    if (!closed_) {
      ending_ = true;
      if (queue_.empty()) closeNow();
    }
    return cb.Env().Undefined();
  }

  Napi::Value destroy(const Napi::CallbackInfo &cb) {
    closeNow();
    return cb.Env().Undefined();
  }

  void ready(int status, int events) {
    if (status < 0) return closeNow();
    if (events & UV_WRITABLE) flush();
    if (!closed_ && (events & UV_READABLE)) receive();
  }

  // Sends queued bytes until the socket is full; watches for POLLOUT while any remain.
  void flush() {
    while (!closed_ && !queue_.empty()) {
      Outgoing &o = queue_.front();
      iovec iov{o.bytes.data() + o.offset, o.bytes.size() - o.offset};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
      if (!o.fds.empty()) {
        const size_t size = sizeof(int) * o.fds.size();
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(size);
        cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(size);
        memcpy(CMSG_DATA(c), o.fds.data(), size);
      }
      const ssize_t n = sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return closeNow();  // EPIPE, ECONNRESET, ...: the peer is gone
      }
      closeAll(o.fds);
      o.offset += size_t(n);
      if (o.offset == o.bytes.size()) queue_.pop_front();
    }
    if (closed_) return;
    if (queue_.empty() && ending_) return closeNow();
    poller_->watch(UV_READABLE | (queue_.empty() ? 0 : UV_WRITABLE));
  }

  // Reads a few messages per wake-up (the poll is level-triggered, so more will come).
  void receive() {
    static thread_local char buffer[64 * 1024];
    for (int round = 0; round < 16 && !closed_; round++) {
      iovec iov{buffer, sizeof buffer};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        return closeNow();
      }
      std::vector<int> fds;
      for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const size_t at = fds.size();
        fds.resize(at + count);
        memcpy(fds.data() + at, CMSG_DATA(c), count * sizeof(int));
      }
      if (n == 0) {
        closeAll(fds);
        return closeNow();  // the peer hung up
      }
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      Napi::Array jsFds = Napi::Array::New(env, fds.size());
      for (size_t i = 0; i < fds.size(); i++) jsFds.Set(uint32_t(i), Napi::Number::New(env, fds[i]));
      Napi::Buffer<char> data = Napi::Buffer<char>::Copy(env, buffer, size_t(n));
      emit(env, onData_, Value(), {Value(), data, jsFds}, *context_);
    }
  }

  // Stops polling and closes the socket now; the close callback follows on a later
  // loop turn, exactly once.
  void closeNow() {
    if (closed_) return;
    closed_ = true;
    poller_->close();
    ::close(fd_);
    fd_ = -1;
    for (Outgoing &o : queue_) closeAll(o.fds);
    queue_.clear();
  }

  void closed() {
    socketEnv_->open.forget(this);
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    emit(env, onClose_, Value(), {Value()}, *context_);
    onData_.Reset();
    onClose_.Reset();
    Unref();
  }

  SocketEnv *socketEnv_ = nullptr;
  int fd_ = -1;
  ucred peer_{};
  Poller *poller_ = nullptr;
  Napi::FunctionReference onData_, onClose_;
  std::unique_ptr<Napi::AsyncContext> context_;
  std::deque<Outgoing> queue_;
  bool ending_ = false;
  bool closed_ = false;
};

// A connection object for a connected socket (nonblocking, close-on-exec), or empty
// with an exception pending.
Napi::Value newConnection(Napi::Env env, SocketEnv *socketEnv, int fd, Napi::Object handlers) {
  ucred peer{};
  socklen_t len = sizeof peer;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0) {
    const int err = errno;
    ::close(fd);
    makeError(env, SysError::from(err, "getsockopt", "SO_PEERCRED")).ThrowAsJavaScriptException();
    return Napi::Value();
  }
  ConnectionInit init{socketEnv, fd, peer};
  return socketEnv->connectionCtor.New({Napi::External<ConnectionInit>::New(env, &init), handlers});
}

// ---------------------------------------------------------------- NativeUnixServer

struct ServerInit {
  SocketEnv *socketEnv;
  int fd;
  std::string path;
};

class Server : public Napi::ObjectWrap<Server>, public Closable {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeUnixServer",
                       {
                           InstanceAccessor<&Server::path>("path"),
                           InstanceMethod<&Server::close>("close"),
                       });
  }

  // new NativeUnixServer(External<ServerInit>, onConnection, handlers): owns the fd (and
  // the bound path), so every way out that does not open the server closes (and unlinks) them.
  explicit Server(const Napi::CallbackInfo &cb) : Napi::ObjectWrap<Server>(cb) {
    Napi::Env env = cb.Env();
    const auto *initArg = externalArg<ServerInit>(cb, "NativeUnixServer is created by listenUnix()");
    if (!initArg) return;
    const ServerInit &init = *initArg;
    socketEnv_ = init.socketEnv;
    fd_ = init.fd;
    path_ = init.path;
    Napi::Function data, close;
    if (cb.Length() != 3 || !cb[1].IsFunction() || !readHandlers(cb[2], data, close)) {
      shut();
      throwType(env, "NativeUnixServer: listenUnix(path, mode, onConnection, {data, close}) needs functions");
      return;
    }
    onConnection_ = Napi::Persistent(cb[1].As<Napi::Function>());
    handlers_ = Napi::Persistent(cb[2].As<Napi::Object>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "UbloopUnixServer", cb.This().As<Napi::Object>());
    if (env.IsExceptionPending()) {
      shut();
      return;
    }
    poller_ = Poller::start(socketEnv_->loop, fd_, [this](int status, int) {
      if (status == 0) accept();
    });
    if (!poller_) {
      const int err = errno;
      shut();
      makeError(env, SysError::from(err, "uv_poll_init")).ThrowAsJavaScriptException();
      return;
    }
    poller_->closed = [this] { Unref(); };
    socketEnv_->open.add(this);
    Ref();
  }

  ~Server() override {
    teardown();
    if (spareFd_ >= 0) ::close(spareFd_);
  }

  void teardown() override {
    if (closed_ || !poller_) return;  // closed, or never opened
    poller_->closed = nullptr;
    shut();
  }

 private:
  Napi::Value path(const Napi::CallbackInfo &cb) { return Napi::String::New(cb.Env(), path_); }

  Napi::Value close(const Napi::CallbackInfo &cb) {
    shut();
    return cb.Env().Undefined();
  }

  // Stops listening, closes the socket and removes its path. Idempotent.
  void shut() {
    if (closed_ || fd_ < 0) return;
    closed_ = true;
    if (poller_) poller_->close();
    ::close(fd_);
    fd_ = -1;
    if (spareFd_ >= 0) ::close(spareFd_);
    spareFd_ = -1;
    unlink(path_.c_str());
    socketEnv_->open.forget(this);
  }

  void accept() {
    while (!closed_) {
      const int fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) shed();
        return;
      }
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      Napi::Value conn = newConnection(env, socketEnv_, fd, handlers_.Value());
      if (env.IsExceptionPending()) {
        env.GetAndClearPendingException();  // that client is dropped; keep serving the others
        continue;
      }
      emit(env, onConnection_, Value(), {conn}, *context_);
    }
  }

  // Out of descriptors: the waiting client would keep the level-triggered poll firing
  // forever. Use the spare descriptor to accept it and hang up on it instead.
  void shed() {
    if (spareFd_ < 0) return;
    ::close(spareFd_);
    const int fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) ::close(fd);
    spareFd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }

  SocketEnv *socketEnv_ = nullptr;
  int fd_ = -1;
  int spareFd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::string path_;
  Poller *poller_ = nullptr;
  Napi::FunctionReference onConnection_;
  Napi::ObjectReference handlers_;
  std::unique_ptr<Napi::AsyncContext> context_;
  bool closed_ = false;
};

// ---------------------------------------------------------------- listenUnix, connectUnix

bool socketAddress(Napi::Env env, const std::string &path, const char *op, sockaddr_un &addr) {
  addr = sockaddr_un{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path || path.find('\0') != std::string::npos) {
    makeError(env, SysError::from(path.empty() ? EINVAL : ENAMETOOLONG, op, "socket path '" + path + "'"))
        .ThrowAsJavaScriptException();
    return false;
  }
  memcpy(addr.sun_path, path.data(), path.size());
  return true;
}

// A socket left behind by a dead server is removed; one that still answers is in use.
std::optional<SysError> removeStaleSocket(const sockaddr_un &addr) {
  struct stat st {};
  if (lstat(addr.sun_path, &st) < 0 || !S_ISSOCK(st.st_mode)) return std::nullopt;  // bind() will say
  const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe < 0) return SysError::from(errno, "socket");
  const int r = connect(probe, reinterpret_cast<const sockaddr *>(&addr), sizeof addr);
  const int err = errno;
  ::close(probe);
  if (r == 0 || err == EAGAIN)
    return SysError::from(EADDRINUSE, "bind", std::string("a server is listening on ") + addr.sun_path);
  if (err == ECONNREFUSED) unlink(addr.sun_path);
  return std::nullopt;
}

Napi::Value listenUnix(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  auto *socketEnv = static_cast<SocketEnv *>(cb.Data());
  if (cb.Length() < 4 || !cb[0].IsString() || !cb[1].IsNumber() || !cb[2].IsFunction() || !isHandlers(cb[3])) {
    Napi::TypeError::New(env, "listenUnix(path, mode, onConnection, {data, close}): bad arguments")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const std::string path = cb[0].As<Napi::String>().Utf8Value();
  const auto mode = mode_t(cb[1].As<Napi::Number>().Uint32Value() & 07777);
  sockaddr_un addr;
  if (!socketAddress(env, path, "bind", addr)) return env.Undefined();
  if (auto err = removeStaleSocket(addr)) {
    makeError(env, *err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    makeError(env, SysError::from(errno, "socket")).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::optional<SysError> err;
  if (bind(fd, reinterpret_cast<const sockaddr *>(&addr), sizeof addr) < 0) {
    err = SysError::from(errno, "bind", path);
  } else if (chmod(path.c_str(), mode) < 0) {
    err = SysError::from(errno, "chmod", path);
    unlink(path.c_str());
  } else if (listen(fd, SOMAXCONN) < 0) {
    err = SysError::from(errno, "listen", path);
    unlink(path.c_str());
  }
  if (err) {
    ::close(fd);
    makeError(env, *err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  ServerInit init{socketEnv, fd, path};
  return socketEnv->serverCtor.New({Napi::External<ServerInit>::New(env, &init), cb[2], cb[3]});
}

Napi::Value connectUnix(const Napi::CallbackInfo &cb) {
  Napi::Env env = cb.Env();
  auto *socketEnv = static_cast<SocketEnv *>(cb.Data());
  if (cb.Length() < 2 || !cb[0].IsString() || !isHandlers(cb[1])) {
    Napi::TypeError::New(env, "connectUnix(path, {data, close}): bad arguments").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const std::string path = cb[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  if (!socketAddress(env, path, "connect", addr)) return env.Undefined();
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    makeError(env, SysError::from(errno, "socket")).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // A blocking connect: on a unix socket it only waits while the server's backlog is full.
  int r;
  do r = connect(fd, reinterpret_cast<const sockaddr *>(&addr), sizeof addr);
  while (r < 0 && errno == EINTR);
  if (r < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
    const int err = errno;
    ::close(fd);
    makeError(env, SysError::from(err, r < 0 ? "connect" : "fcntl", path)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Value conn = newConnection(env, socketEnv, fd, cb[1].As<Napi::Object>());
  return env.IsExceptionPending() ? env.Undefined() : conn;
}

}  // namespace

void registerUnixSocket(Napi::Env env, Napi::Object exports) {
  auto *socketEnv = newEnvState<SocketEnv>(env);
  napi_get_uv_event_loop(env, &socketEnv->loop);
  Napi::Function connection = Connection::define(env);
  Napi::Function server = Server::define(env);
  socketEnv->connectionCtor = Napi::Persistent(connection);
  socketEnv->serverCtor = Napi::Persistent(server);
  exports.Set("NativeUnixConnection", connection);
  exports.Set("NativeUnixServer", server);
  exports.Set("listenUnix", Napi::Function::New(env, listenUnix, "listenUnix", socketEnv));
  exports.Set("connectUnix", Napi::Function::New(env, connectUnix, "connectUnix", socketEnv));
}

}  // namespace ubloop
