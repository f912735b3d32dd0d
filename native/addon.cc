// Node-API surface: argument conversion only. Defaults and validation live in
// src/native.ts and its callers; misuse of this raw API is a TypeError, and every other
// failure an instance of the error class handed over by setErrorClass() (addon_errors.h).
//
// Entry points: runBatch, recover, undoStop (addon_session.cc: the ptrace sessions),
// setMemlockLimit (prlimit), tryFlock; setErrorClass first.
#include <errno.h>
#include <sys/file.h>
#include <string.h>

#include <napi.h>

#include <string>
#include <vector>

#include "addon_convert.h"
#include "addon_errors.h"
#include "addon_session.h"
#include "arch.h"
#include "guardian_stub.h"
#include "rlimit.h"

namespace {

using lockmem::Stage;
using lockmem::addon::Failure;
using lockmem::addon::requirePid;
using lockmem::addon::requireU64;
using lockmem::addon::throwError;

Napi::Object limitToJs(Napi::Env env, const lockmem::MemlockLimit& l) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("soft", Napi::BigInt::New(env, l.soft));
  o.Set("hard", Napi::BigInt::New(env, l.hard));
  return o;
}

// setMemlockLimit(pid, { soft, hard }): prlimit(2) on the target; returns the previous
// limit. (Reading it needs no addon: /proc/PID/limits, src/proc/limits.ts.)
Napi::Value SetMemlockLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "setMemlockLimit(pid, {soft, hard})");
  int pid = requirePid(info[0], "pid");
  Napi::Object lim = info[1].As<Napi::Object>();
  lockmem::MemlockLimit next;
  next.soft = requireU64(lim.Get("soft"), "soft");
  next.hard = requireU64(lim.Get("hard"), "hard");
  lockmem::MemlockLimit old;
  if (!lockmem::setMemlockLimit(pid, next, &old)) {
    int err = errno;
    throwError(env, Failure{err, Stage::Prlimit, "setting RLIMIT_MEMLOCK of process " + std::to_string(pid) + ": " + strerror(err), pid, pid});
  }
  return limitToJs(env, old);
}

// flock(2) without blocking (Node has no binding): true when taken, false when someone else
// holds a conflicting lock. The per-target lock (src/target-lock.ts) polls with it.
Napi::Value TryFlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "tryFlock(fd, \"exclusive\" | \"shared\" | \"unlock\")");
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string mode = info[1].As<Napi::String>().Utf8Value();
  int op = mode == "exclusive" ? LOCK_EX : mode == "shared" ? LOCK_SH : mode == "unlock" ? LOCK_UN : -1;
  if (op < 0) throw Napi::TypeError::New(env, "tryFlock mode must be exclusive, shared or unlock");
  int r;
  do {
    r = flock(fd, op | LOCK_NB);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  int err = errno;
  throwError(env, Failure{err, Stage::Flock, std::string("flock: ") + strerror(err), 0, 0});
}

// startGuardianStub({ argv, env }): forks the guardian's stub (native/guardian_stub.h).
Napi::Value StartGuardianStub(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "startGuardianStub({ argv, env }) takes one object");
  Napi::Object req = info[0].As<Napi::Object>();
  auto strings = [&](const char* key) {
    Napi::Value v = req.Get(key);
    if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(key) + " must be an array of strings");
    Napi::Array a = v.As<Napi::Array>();
    std::vector<std::string> out;
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value s = a.Get(i);
      if (!s.IsString()) throw Napi::TypeError::New(env, std::string(key) + " must be an array of strings");
      out.push_back(s.As<Napi::String>().Utf8Value());
    }
    return out;
  };
  std::vector<std::string> argv = strings("argv");
  std::vector<std::string> environ = strings("env");
  if (argv.empty()) throw Napi::TypeError::New(env, "argv must name the program first");
  lockmem::GuardianStub stub;
  if (!lockmem::startGuardianStub(argv, environ, &stub)) {
    int err = errno;
    throwError(env, Failure{err, Stage::Guardian, std::string("starting the guardian: ") + strerror(err), 0, 0});
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, stub.pid));
  out.Set("fd", Napi::Number::New(env, stub.writeFd));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("arch", Napi::String::New(env, lockmem::arch::name()));
  Napi::Object nrs = Napi::Object::New(env);
  nrs.Set("mlock2", Napi::Number::New(env, lockmem::arch::nrMlock2()));
  nrs.Set("munlock", Napi::Number::New(env, lockmem::arch::nrMunlock()));
  nrs.Set("mlockall", Napi::Number::New(env, lockmem::arch::nrMlockall()));
  nrs.Set("munlockall", Napi::Number::New(env, lockmem::arch::nrMunlockall()));
  exports.Set("syscalls", nrs);
  exports.Set("regsSize", Napi::Number::New(env, sizeof(lockmem::arch::Regs)));
  exports.Set("setErrorClass", Napi::Function::New(env, lockmem::addon::SetErrorClass, "setErrorClass"));
  exports.Set("runBatch", Napi::Function::New(env, lockmem::addon::RunBatch, "runBatch"));
  exports.Set("recover", Napi::Function::New(env, lockmem::addon::Recover, "recover"));
  exports.Set("undoStop", Napi::Function::New(env, lockmem::addon::UndoStop, "undoStop"));
  exports.Set("setMemlockLimit", Napi::Function::New(env, SetMemlockLimit, "setMemlockLimit"));
  exports.Set("tryFlock", Napi::Function::New(env, TryFlock, "tryFlock"));
  exports.Set("startGuardianStub", Napi::Function::New(env, StartGuardianStub, "startGuardianStub"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lockmem, Init)
