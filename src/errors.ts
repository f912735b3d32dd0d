// One error type for everything that goes wrong on a host: a program can act on `code`,
// a person reads `message` and `hint`.
import { constants } from "os";

/** errno values by name (Linux's, as Node knows them): compare with these, never with numbers. */
export const ERRNO = constants.errno;

/** "ENOMEM" for 12; "errno N" for a number Node has no name for. */
export function errnoName(errno: number): string {
  const name = Object.entries(ERRNO).find(([, v]) => v === errno)?.[0];
  return name ?? `errno ${errno}`;
}

export type LockErrorCode =
  | "EPERM" // not allowed (ptrace denied, no CAP_IPC_LOCK, ...)
  | "ENOMEM" // RLIMIT_MEMLOCK too low, or the kernel refused the range
  | "EAGAIN"
  | "ESRCH" // no such process, or it exited while we worked
  | "EBUSY" // someone else traces it, or another lockmem holds it
  | "ESECCOMP" // its seccomp filter would deny or kill the call
  | "ENOTARGET" // the target spec matched nothing
  | "EAMBIGUOUS" // the target spec matched several processes and match is "one"
  | "EUSAGE" // bad input
  | "EARCH" // unsupported architecture or target ABI
  | "EKERNEL" // the kernel lacks a facility lockmem's promises rest on (kernel.ts)
  | "ETIMEDOUT"
  | "EPROTO" // agent protocol mismatch
  | "EINTR" // stopped early by a signal or a closed output (the report says what stays locked)
  | "EINTERNAL";

export interface LockErrorInit {
  code: LockErrorCode;
  message: string;
  hint?: string;
  errno?: number;
  syscall?: string;
  pid?: number;
  stage?: string;
  /** For EUSAGE: the input field that is wrong, e.g. "target.cmdline". */
  field?: string;
}

export class LockError extends Error {
  readonly code: LockErrorCode;
  readonly hint?: string;
  readonly errno?: number;
  readonly syscall?: string;
  readonly pid?: number;
  readonly stage?: string;
  readonly field?: string;

  constructor(init: LockErrorInit) {
    super(init.message);
    this.name = "LockError";
    this.code = init.code;
    this.hint = init.hint;
    this.errno = init.errno;
    this.syscall = init.syscall;
    this.pid = init.pid;
    this.stage = init.stage;
    this.field = init.field;
  }

  toJSON(): LockErrorInit {
    return {
      code: this.code,
      message: this.message,
      hint: this.hint,
      errno: this.errno,
      syscall: this.syscall,
      pid: this.pid,
      stage: this.stage,
      field: this.field,
    };
  }
}

/** Bad input: names the field and the fix. */
export function usageError(field: string, message: string, hint?: string): LockError {
  return new LockError({ code: "EUSAGE", field, message: `${field}: ${message}`, hint });
}

/**
 * Where in the addon a NativeError happened: native/stage.h lists the same strings in the
 * same order (tests/unit/native-stages.test.ts keeps the two in step).
 */
export const NATIVE_STAGES = ["attach", "interrupt", "wait", "getregs", "arch", "journal", "seccomp", "inject", "restore", "detach", "prlimit", "flock", "guardian"] as const;
export type NativeStage = (typeof NATIVE_STAGES)[number];

/** What the addon hands to NativeError's constructor (native/addon_errors.cc). */
export interface NativeErrorInit {
  message: string;
  errno: number;
  stage: NativeStage;
  pid: number;
  tid: number;
  /** A session's failure: false when the target may still hold injected state (the journal stays for recovery). */
  journalRemoved?: boolean;
}

/**
 * A failure of the native addon, before it is explained (src/inject.ts toLockError turns it
 * into a LockError). The addon constructs it itself: src/native.ts hands this class over at
 * load (better-sqlite3's pattern), so `instanceof NativeError` holds even where the addon
 * was loaded by another realm (jest's module registry). `code` is the errno's name.
 */
export class NativeError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly stage: NativeStage;
  readonly pid: number;
  readonly tid: number;
  readonly journalRemoved?: boolean;

  constructor(init: NativeErrorInit) {
    super(init.message);
    this.name = "NativeError";
    this.code = errnoName(init.errno);
    this.errno = init.errno;
    this.stage = init.stage;
    this.pid = init.pid;
    this.tid = init.tid;
    this.journalRemoved = init.journalRemoved;
  }
}
