// The addon's session entry points: runBatch(), recover() and undoStop(). Each runs on one
// libuv worker thread from start to end (ptrace is per tracer thread) and settles a
// promise.
#include "addon_session.h"

#include <optional>
#include <utility>

#include "addon_convert.h"
#include "addon_errors.h"
#include "journal.h"

namespace lockmem {
namespace addon {

namespace {

class SessionWorker : public Napi::AsyncWorker {
 public:
  SessionWorker(Napi::Env env, BatchSpec spec, std::optional<Recovery> recovery)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        spec_(std::move(spec)),
        recovery_(std::move(recovery)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    ok_ = recovery_ ? recoverSession(spec_, *recovery_, &outcome_, &error_) : runBatch(spec_, &outcome_, &error_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (ok_) {
      deferred_.Resolve(batchReplyToJs(env, spec_.tid, outcome_));
      return;
    }
    Failure f{error_.err, error_.stage, error_.message, spec_.pid, spec_.tid, true, outcome_.journalRemoved};
    deferred_.Reject(makeError(env, f));
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  BatchSpec spec_;
  std::optional<Recovery> recovery_;
  BatchOutcome outcome_;
  InjectError error_;
  bool ok_ = false;
};

class UndoStopWorker : public Napi::AsyncWorker {
 public:
  UndoStopWorker(Napi::Env env, pid_t pid, std::vector<long> eintrSyscalls, std::vector<procfs::ThreadCall> calls)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        pid_(pid),
        eintr_(std::move(eintrSyscalls)),
        calls_(std::move(calls)) {}

  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { rearmed_ = undoStop(pid_, eintr_, calls_); }

  void OnOK() override {
    Napi::Object reply = Napi::Object::New(Env());
    reply.Set("otherThreadsRearmed", Napi::Number::New(Env(), rearmed_));
    deferred_.Resolve(reply);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  pid_t pid_;
  std::vector<long> eintr_;
  std::vector<procfs::ThreadCall> calls_;
  int rearmed_ = 0;
};

Napi::Object requestOf(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() != 1 || !info[0].IsObject()) throw Napi::TypeError::New(info.Env(), usage);
  return info[0].As<Napi::Object>();
}

// The journal's calls= value (checked by the caller too: src/journal/format.ts).
std::vector<procfs::ThreadCall> blockedCallsOf(const Napi::Object& req) {
  Napi::Value v = req.Get("blockedCalls");
  std::vector<procfs::ThreadCall> calls;
  if (v.IsUndefined()) return calls;
  if (!v.IsString() || !Journal::parseBlockedCalls(v.As<Napi::String>().Utf8Value(), &calls)) {
    throw Napi::TypeError::New(req.Env(), "blockedCalls must be a journal's calls= value");
  }
  return calls;
}

Napi::Value queue(SessionWorker* worker) {
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace

Napi::Value RunBatch(const Napi::CallbackInfo& info) {
  Napi::Object req = requestOf(info, "runBatch(request) takes one object");
  BatchSpec spec = readSessionSpec(req);
  spec.stopProcess = optionalBool(req, "stopProcess");
  spec.checkSeccomp = optionalBool(req, "checkSeccomp");
  spec.suspendSeccomp = optionalBool(req, "suspendSeccomp");
  Napi::Value stop = req.Get("stopOnError");
  if (!stop.IsBoolean()) throw Napi::TypeError::New(info.Env(), "stopOnError must be a boolean");
  spec.stopOnError = stop.As<Napi::Boolean>().Value();
  return queue(new SessionWorker(info.Env(), std::move(spec), std::nullopt));
}

Napi::Value Recover(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object req = requestOf(info, "recover(request) takes one object");
  BatchSpec spec = readSessionSpec(req);
  // A recovery finishes a crash-safe session: held in the group stop, stopping at the
  // first failing call, as the run that died was.
  spec.stopProcess = true;
  spec.stopOnError = true;
  Recovery recovery;
  Napi::Value regs = req.Get("regs");
  if (!regs.IsBuffer()) throw Napi::TypeError::New(env, "regs must be a Buffer");
  Napi::Buffer<uint8_t> buf = regs.As<Napi::Buffer<uint8_t>>();
  recovery.regs.assign(reinterpret_cast<const char*>(buf.Data()), buf.Length());
  recovery.stayStopped = optionalBool(req, "stayStopped");
  Napi::Value mask = req.Get("sigmask");
  if (!mask.IsUndefined()) {
    recovery.haveSigmask = true;
    recovery.sigmask = requireU64(mask, "sigmask");
  }
  recovery.blockedCalls = blockedCallsOf(req);
  return queue(new SessionWorker(env, std::move(spec), std::move(recovery)));
}

Napi::Value UndoStop(const Napi::CallbackInfo& info) {
  Napi::Object req = requestOf(info, "undoStop(request) takes one object");
  pid_t pid = requirePid(req.Get("pid"), "pid");
  UndoStopWorker* worker = new UndoStopWorker(info.Env(), pid, optionalNumbers(req, "eintrSyscalls"), blockedCallsOf(req));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace addon
}  // namespace lockmem
