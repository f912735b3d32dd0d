#include "addon_errors.h"

namespace lockmem {
namespace addon {

namespace {

// Per environment (a worker thread loads its own): the constructor handed over.
struct ErrorClass {
  Napi::FunctionReference ctor;
};

}  // namespace

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "setErrorClass(NativeError) takes the error class");
  ErrorClass* data = env.GetInstanceData<ErrorClass>();
  if (!data) {
    data = new ErrorClass();
    env.SetInstanceData(data);
  }
  // The newest wins: under jest each test file loads src/native.ts again (its own realm)
  // and hands over its own class, while the addon itself is loaded once per process.
  data->ctor = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Value makeError(Napi::Env env, const Failure& f) {
  Napi::Object init = Napi::Object::New(env);
  init.Set("message", Napi::String::New(env, f.message));
  init.Set("errno", Napi::Number::New(env, f.err));
  init.Set("stage", Napi::String::New(env, stageName(f.stage)));
  init.Set("pid", Napi::Number::New(env, f.pid));
  init.Set("tid", Napi::Number::New(env, f.tid));
  if (f.hasJournalRemoved) init.Set("journalRemoved", Napi::Boolean::New(env, f.journalRemoved));
  ErrorClass* data = env.GetInstanceData<ErrorClass>();
  if (!data || data->ctor.IsEmpty()) {
    // Only a raw use of the addon gets here: src/native.ts hands the class over at load.
    return Napi::TypeError::New(env, "lockmem addon: setErrorClass() was not called; the failure was: " + f.message).Value();
  }
  return data->ctor.New({init});
}

void throwError(Napi::Env env, const Failure& failure) {
  throw Napi::Error(env, makeError(env, failure));
}

}  // namespace addon
}  // namespace lockmem
