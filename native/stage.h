// Where a native failure happened: the `stage` of a NativeError (src/errors.ts). This is
// the one list; src/errors.ts NATIVE_STAGES names the same strings in the same order, and
// tests/unit/native-stages.test.ts keeps the two in step. A failure's stage decides how the
// TypeScript side explains it (src/inject.ts toLockError), so a stage is a promise: add
// one here and there, never reuse one for a different step.
#pragma once

namespace lockmem {

#define LOCKMEM_STAGES(X)                                                          \
  X(Attach, "attach")       /* PTRACE_SEIZE */                                     \
  X(Interrupt, "interrupt") /* our SIGSTOP, PTRACE_INTERRUPT, the hold */          \
  X(Wait, "wait")           /* waitpid for the thread's next stop */               \
  X(Getregs, "getregs")     /* reading the thread's registers and signal mask */   \
  X(Arch, "arch")           /* the target's ABI, its [vdso] syscall instruction */ \
  X(Journal, "journal")     /* writing the crash journal */                        \
  X(Seccomp, "seccomp")     /* the target's seccomp filters refuse a call */       \
  X(Inject, "inject")       /* running our calls */                                \
  X(Restore, "restore")     /* putting the thread's registers and mask back */     \
  X(Detach, "detach")       /* PTRACE_DETACH */                                    \
  X(Prlimit, "prlimit")     /* prlimit(2) on the target */                         \
  X(Flock, "flock")         /* flock(2) for the per-target lock */              \
  X(Guardian, "guardian")   /* starting the guardian's stub (fork) */

enum class Stage {
#define LOCKMEM_STAGE_ENUM(name, text) name,
  LOCKMEM_STAGES(LOCKMEM_STAGE_ENUM)
#undef LOCKMEM_STAGE_ENUM
};

inline const char* stageName(Stage stage) {
  switch (stage) {
#define LOCKMEM_STAGE_CASE(name, text) \
  case Stage::name:                    \
    return text;
    LOCKMEM_STAGES(LOCKMEM_STAGE_CASE)
#undef LOCKMEM_STAGE_CASE
  }
  return "?";
}

}  // namespace lockmem
