// Crash recovery. Before every injection lockmem writes a journal under
// <state dir>/journal/: `<pid>-<startTime>-<tid>.json` (this file's side: who, which
// calls, which lockmem process owns the session) and `.regs` beside it (written by the
// addon, native/journal.h: whether the process was stopped before, the saved registers,
// and "restored=1" once they are back). Both appear complete or not at all (temporary
// file, then rename). If lockmem dies in between, the target is left group-stopped (never
// running on our registers) and `recoverInterrupted` finishes the job: puts the registers
// back, completes the batch, continues the process only if it was running before. It runs
// in the guardian the moment the owner dies (src/guardian.ts), at the start of every
// lock/unlock of that pid, and in `lockmem recover`; always under the target's lock, so
// never beside a live session: a journal whose lock is free has no live owner.
//
// A journal decides which syscalls run in a target and which registers it gets back, so
// nothing in it is trusted beyond the state dir check (src/state-dir.ts): names must be
// what lockmem writes, every field must have the type and range lockmem writes, and the
// calls must be exactly the mlock family with the arguments a plan would use. Anything
// else is set aside (`.invalid`) and reported, never run.
//
// files.ts: where the files are, how they are written and removed; format.ts: what they
// hold and the checks (its versions); recover.ts: recovery; settle.ts: what recovery waits
// for in the target; sessions.ts: sessions whose owner died, for status and doctor.
export type { JournalFiles } from "./files";
export { journalFiles, removeJournal, writeJournalHeader } from "./files";
export { parseRegsFile, validateJournalHeader } from "./format";
export type { RecoverOptions, RecoveryResult } from "./recover";
export { recoverInterrupted } from "./recover";
export type { HeldByDeadRun } from "./sessions";
export { deadSessions } from "./sessions";
