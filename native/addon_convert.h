// Conversion between JavaScript values and the structs of inject.h. Only types are checked
// here (a wrong one is a TypeError); defaults and validation live in src/native.ts and its
// callers.
#pragma once

#include <napi.h>

#include <cstdint>

#include "inject.h"

namespace lockmem {
namespace addon {

int32_t requirePid(const Napi::Value& v, const char* what);
uint64_t requireU64(const Napi::Value& v, const char* what);
bool optionalBool(const Napi::Object& o, const char* key);
std::vector<long> optionalNumbers(const Napi::Object& o, const char* key);

// The fields every session request has: pid, tid, vdsoStart, vdsoEnd, ops, journalPath,
// eintrSyscalls.
BatchSpec readSessionSpec(const Napi::Object& req);

Napi::Object batchReplyToJs(Napi::Env env, pid_t tid, const BatchOutcome& outcome);

}  // namespace addon
}  // namespace lockmem
