// Errors the addon throws: instances of the one error class the TypeScript side hands over
// at load (setErrorClass(NativeError), src/native.ts; better-sqlite3's pattern), so that a
// native failure is an `instanceof NativeError` with its code, stage and pid, in whatever
// realm loaded the addon. Misuse of the raw API is a TypeError instead.
#pragma once

#include <napi.h>

#include <string>

#include "stage.h"

namespace lockmem {
namespace addon {

struct Failure {
  int err = 0;
  Stage stage = Stage::Attach;
  std::string message;
  int pid = 0;
  int tid = 0;
  // Set for a session's failure: false when the target may still hold injected state.
  bool hasJournalRemoved = false;
  bool journalRemoved = false;
};

// setErrorClass(NativeError): kept for this Node environment.
Napi::Value SetErrorClass(const Napi::CallbackInfo& info);

// A new instance of the class handed over (a TypeError saying so if none was).
Napi::Value makeError(Napi::Env env, const Failure& failure);

// Throws makeError(...) as a C++ exception (node-addon-api turns it into a JS throw).
[[noreturn]] void throwError(Napi::Env env, const Failure& failure);

}  // namespace addon
}  // namespace lockmem
