// Node-API surface: argument conversion only. Defaults and validation live in
// src/native.ts and its callers; misuse of this raw API is a TypeError.
#include <errno.h>
#include <sys/file.h>
#include <string.h>

#include <napi.h>

#include <string>

#include "arch.h"
#include "inject.h"
#include "rlimit.h"

namespace {

using lockmem::BatchOp;
using lockmem::BatchOutcome;
using lockmem::BatchSpec;
using lockmem::InjectError;
using lockmem::SyscallOutcome;

const char* errnoName(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENOEXEC: return "ENOEXEC";
    case ECHILD: return "ECHILD";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    default: return "EUNKNOWN";
  }
}

Napi::Error makeError(Napi::Env env, int err, const std::string& stage, const std::string& message,
                      int pid, int tid) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, errnoName(err)));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("stage", Napi::String::New(env, stage));
  e.Set("pid", Napi::Number::New(env, pid));
  e.Set("tid", Napi::Number::New(env, tid));
  return e;
}

int32_t requirePid(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 1 || d > 4194304 || d != static_cast<int32_t>(d)) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a positive integer pid");
  }
  return static_cast<int32_t>(d);
}

uint64_t requireU64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::TypeError::New(v.Env(), std::string(what) + " does not fit in 64 bits");
    return x;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
      throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a non-negative integer");
    }
    return static_cast<uint64_t>(d);
  }
  throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a bigint");
}

lockmem::Syscall readSyscall(const Napi::Object& o) {
  lockmem::Syscall call;
  Napi::Value nr = o.Get("nr");
  if (!nr.IsNumber()) throw Napi::TypeError::New(o.Env(), "op.nr must be a number");
  call.nr = nr.As<Napi::Number>().Int64Value();
  Napi::Value args = o.Get("args");
  if (!args.IsArray()) throw Napi::TypeError::New(o.Env(), "op.args must be an array");
  Napi::Array a = args.As<Napi::Array>();
  if (a.Length() > 6) throw Napi::TypeError::New(o.Env(), "op.args has more than 6 arguments");
  for (uint32_t i = 0; i < a.Length(); i++) call.args[i] = requireU64(a.Get(i), "op.args[i]");
  return call;
}

Napi::Object outcomeToJs(Napi::Env env, const SyscallOutcome& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ret", Napi::BigInt::New(env, r.ret));
  o.Set("errno", Napi::Number::New(env, r.err));
  o.Set("ns", Napi::Number::New(env, static_cast<double>(r.ns)));
  return o;
}

class BatchWorker : public Napi::AsyncWorker {
 public:
  BatchWorker(Napi::Env env, BatchSpec spec)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), spec_(std::move(spec)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  // Runs on one libuv worker thread from start to end: ptrace is per tracer thread.
  void Execute() override { ok_ = lockmem::runBatch(spec_, &outcome_, &error_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (!ok_) {
      Napi::Error e = makeError(env, error_.err, error_.stage, error_.message, spec_.pid, spec_.tid);
      e.Set("journalRemoved", Napi::Boolean::New(env, outcome_.journalRemoved));
      deferred_.Reject(e.Value());
      return;
    }
    Napi::Object reply = Napi::Object::New(env);
    reply.Set("tid", Napi::Number::New(env, spec_.tid));
    Napi::Array results = Napi::Array::New(env, outcome_.results.size());
    for (size_t i = 0; i < outcome_.results.size(); i++) results.Set(i, outcomeToJs(env, outcome_.results[i]));
    reply.Set("results", results);
    Napi::Array undo = Napi::Array::New(env, outcome_.undoResults.size());
    for (size_t i = 0; i < outcome_.undoResults.size(); i++) undo.Set(i, outcomeToJs(env, outcome_.undoResults[i]));
    reply.Set("undoResults", undo);
    reply.Set("undone", Napi::Number::New(env, static_cast<double>(outcome_.undoResults.size())));
    reply.Set("pauseNs", Napi::Number::New(env, static_cast<double>(outcome_.pauseNs)));
    reply.Set("rearmed", Napi::Boolean::New(env, outcome_.rearmed));
    reply.Set("signalsDelivered", Napi::Number::New(env, outcome_.signalsDelivered));
    reply.Set("signalsDeferred", Napi::Number::New(env, outcome_.signalsDeferred));
    reply.Set("wasStopped", Napi::Boolean::New(env, outcome_.wasStopped));
    reply.Set("groupStopped", Napi::Boolean::New(env, outcome_.groupStopped));
    reply.Set("otherThreadsRearmed", Napi::Number::New(env, outcome_.otherThreadsRearmed));
    deferred_.Resolve(reply);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  BatchSpec spec_;
  BatchOutcome outcome_;
  InjectError error_;
  bool ok_ = false;
};

Napi::Value RunBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "runBatch(request) takes one object");
  Napi::Object req = info[0].As<Napi::Object>();
  BatchSpec spec;
  spec.pid = requirePid(req.Get("pid"), "pid");
  spec.tid = req.Get("tid").IsUndefined() ? 0 : requirePid(req.Get("tid"), "tid");
  spec.vdsoStart = requireU64(req.Get("vdsoStart"), "vdsoStart");
  spec.vdsoEnd = requireU64(req.Get("vdsoEnd"), "vdsoEnd");
  auto optionalBool = [&](const char* key) {
    Napi::Value v = req.Get(key);
    if (v.IsUndefined()) return false;
    if (!v.IsBoolean()) throw Napi::TypeError::New(env, std::string(key) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  };
  spec.stopProcess = optionalBool("stopProcess");
  spec.checkSeccomp = optionalBool("checkSeccomp");
  spec.suspendSeccomp = optionalBool("suspendSeccomp");
  spec.continueOnly = optionalBool("continueOnly");
  Napi::Value journal = req.Get("journalPath");
  if (journal.IsString()) {
    spec.journalPath = journal.As<Napi::String>().Utf8Value();
  } else if (!journal.IsUndefined()) {
    throw Napi::TypeError::New(env, "journalPath must be a string");
  }
  Napi::Value eintr = req.Get("eintrSyscalls");
  if (eintr.IsArray()) {
    Napi::Array list = eintr.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value v = list.Get(i);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, "eintrSyscalls[i] must be a number");
      spec.eintrSyscalls.push_back(v.As<Napi::Number>().Int64Value());
    }
  } else if (!eintr.IsUndefined()) {
    throw Napi::TypeError::New(env, "eintrSyscalls must be an array");
  }
  Napi::Value restore = req.Get("restoreRegs");
  if (restore.IsBuffer()) {
    Napi::Buffer<uint8_t> buf = restore.As<Napi::Buffer<uint8_t>>();
    spec.haveRestoreRegs = true;
    spec.restoreRegs.assign(reinterpret_cast<const char*>(buf.Data()), buf.Length());
    spec.recoveredWasStopped = optionalBool("recoveredWasStopped");
    Napi::Value mask = req.Get("restoreSigmask");
    if (!mask.IsUndefined()) {
      spec.haveRestoreSigmask = true;
      spec.restoreSigmask = requireU64(mask, "restoreSigmask");
    }
  } else if (!restore.IsUndefined()) {
    throw Napi::TypeError::New(env, "restoreRegs must be a Buffer");
  }
  Napi::Value stop = req.Get("stopOnError");
  if (!stop.IsBoolean()) throw Napi::TypeError::New(env, "stopOnError must be a boolean");
  spec.stopOnError = stop.As<Napi::Boolean>().Value();
  Napi::Value opsVal = req.Get("ops");
  if (!opsVal.IsArray()) throw Napi::TypeError::New(env, "ops must be an array");
  Napi::Array ops = opsVal.As<Napi::Array>();
  for (uint32_t i = 0; i < ops.Length(); i++) {
    Napi::Value v = ops.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "ops[i] must be an object");
    Napi::Object o = v.As<Napi::Object>();
    BatchOp op;
    op.call = readSyscall(o);
    Napi::Value undo = o.Get("undo");
    if (undo.IsObject()) {
      op.hasUndo = true;
      op.undo = readSyscall(undo.As<Napi::Object>());
    } else if (!undo.IsUndefined() && !undo.IsNull()) {
      throw Napi::TypeError::New(env, "ops[i].undo must be an object");
    }
    spec.ops.push_back(op);
  }
  BatchWorker* worker = new BatchWorker(env, std::move(spec));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

Napi::Object limitToJs(Napi::Env env, const lockmem::MemlockLimit& l) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("soft", Napi::BigInt::New(env, l.soft));
  o.Set("hard", Napi::BigInt::New(env, l.hard));
  return o;
}

Napi::Value GetMemlockLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1) throw Napi::TypeError::New(env, "getMemlockLimit(pid)");
  int pid = requirePid(info[0], "pid");
  lockmem::MemlockLimit l;
  if (!lockmem::getMemlockLimit(pid, &l)) {
    int err = errno;
    throw makeError(env, err, "prlimit",
                    "reading RLIMIT_MEMLOCK of process " + std::to_string(pid) + ": " + strerror(err), pid, pid);
  }
  return limitToJs(env, l);
}

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
    throw makeError(env, err, "prlimit",
                    "setting RLIMIT_MEMLOCK of process " + std::to_string(pid) + ": " + strerror(err), pid, pid);
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
  throw makeError(env, err, "flock", std::string("flock: ") + strerror(err), 0, 0);
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
  exports.Set("runBatch", Napi::Function::New(env, RunBatch, "runBatch"));
  exports.Set("getMemlockLimit", Napi::Function::New(env, GetMemlockLimit, "getMemlockLimit"));
  exports.Set("setMemlockLimit", Napi::Function::New(env, SetMemlockLimit, "setMemlockLimit"));
  exports.Set("tryFlock", Napi::Function::New(env, TryFlock, "tryFlock"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lockmem, Init)
