// The addon's session entry points (addon_session.cc); the request and reply shapes are
// declared in src/native.ts.
#pragma once

#include <napi.h>

namespace lockmem {
namespace addon {

// runBatch(request): one crash-safe session that runs a batch of calls in the target.
Napi::Value RunBatch(const Napi::CallbackInfo& info);
// recover(request): finishes the session of a run that died, from its journaled registers.
Napi::Value Recover(const Napi::CallbackInfo& info);
// undoStop({ pid, eintrSyscalls }): undoes the stop of a run that died with no register of
// ours in the target.
Napi::Value UndoStop(const Napi::CallbackInfo& info);

}  // namespace addon
}  // namespace lockmem
