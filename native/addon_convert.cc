#include "addon_convert.h"

#include <string>

namespace lockmem {
namespace addon {

namespace {

Syscall readSyscall(const Napi::Object& o) {
  Syscall call;
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

std::vector<BatchOp> readOps(const Napi::Object& req) {
  Napi::Env env = req.Env();
  Napi::Value opsVal = req.Get("ops");
  if (!opsVal.IsArray()) throw Napi::TypeError::New(env, "ops must be an array");
  Napi::Array ops = opsVal.As<Napi::Array>();
  std::vector<BatchOp> out;
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
    out.push_back(op);
  }
  return out;
}

Napi::Object outcomeToJs(Napi::Env env, const SyscallOutcome& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ret", Napi::BigInt::New(env, r.ret));
  o.Set("errno", Napi::Number::New(env, r.err));
  o.Set("ns", Napi::Number::New(env, static_cast<double>(r.ns)));
  return o;
}

Napi::Array outcomesToJs(Napi::Env env, const std::vector<SyscallOutcome>& list) {
  Napi::Array a = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) a.Set(i, outcomeToJs(env, list[i]));
  return a;
}

}  // namespace

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

bool optionalBool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::vector<long> optionalNumbers(const Napi::Object& o, const char* key) {
  std::vector<long> out;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return out;
  if (!v.IsArray()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be an array");
  Napi::Array list = v.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value x = list.Get(i);
    if (!x.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + "[i] must be a number");
    out.push_back(x.As<Napi::Number>().Int64Value());
  }
  return out;
}

BatchSpec readSessionSpec(const Napi::Object& req) {
  BatchSpec spec;
  spec.pid = requirePid(req.Get("pid"), "pid");
  spec.tid = req.Get("tid").IsUndefined() ? 0 : requirePid(req.Get("tid"), "tid");
  spec.vdsoStart = requireU64(req.Get("vdsoStart"), "vdsoStart");
  spec.vdsoEnd = requireU64(req.Get("vdsoEnd"), "vdsoEnd");
  Napi::Value journal = req.Get("journalPath");
  if (journal.IsString()) {
    spec.journalPath = journal.As<Napi::String>().Utf8Value();
  } else if (!journal.IsUndefined()) {
    throw Napi::TypeError::New(req.Env(), "journalPath must be a string");
  }
  spec.eintrSyscalls = optionalNumbers(req, "eintrSyscalls");
  spec.ops = readOps(req);
  return spec;
}

Napi::Object batchReplyToJs(Napi::Env env, pid_t tid, const BatchOutcome& outcome) {
  Napi::Object reply = Napi::Object::New(env);
  reply.Set("tid", Napi::Number::New(env, tid));
  reply.Set("results", outcomesToJs(env, outcome.results));
  reply.Set("undoResults", outcomesToJs(env, outcome.undoResults));
  reply.Set("undone", Napi::Number::New(env, static_cast<double>(outcome.undoResults.size())));
  reply.Set("pauseNs", Napi::Number::New(env, static_cast<double>(outcome.pauseNs)));
  reply.Set("rearmed", Napi::Boolean::New(env, outcome.rearmed));
  reply.Set("signalsDelivered", Napi::Number::New(env, outcome.signalsDelivered));
  reply.Set("signalsDeferred", Napi::Number::New(env, outcome.signalsDeferred));
  reply.Set("wasStopped", Napi::Boolean::New(env, outcome.wasStopped));
  reply.Set("groupStopped", Napi::Boolean::New(env, outcome.groupStopped));
  reply.Set("otherThreadsRearmed", Napi::Number::New(env, outcome.otherThreadsRearmed));
  return reply;
}

}  // namespace addon
}  // namespace lockmem
