// Reading /proc files with errors that say which process and what to do.
import { promises as fs } from "fs";
import * as path from "path";
import { LockError } from "../errors";

export const DEFAULT_PROC_ROOT = "/proc";

function errnoCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : undefined;
}

/**
 * Reads `<procRoot>/<pid>/<file>`. A vanished process becomes ESRCH and a refused read EPERM,
 * because both happen in normal operation (the target exits, another user's process) and the
 * caller needs to tell them apart from bugs.
 */
export async function readProcFile(pid: number, file: string, procRoot: string = DEFAULT_PROC_ROOT): Promise<string> {
  const fullPath = path.join(procRoot, String(pid), file);
  try {
    return await fs.readFile(fullPath, "utf8");
  } catch (err) {
    throw procReadError(err, pid, fullPath);
  }
}

/** The first `maxBytes` of `<procRoot>/<pid>/<file>` (a command line can be megabytes long). */
export async function readProcFileHead(pid: number, file: string, maxBytes: number, procRoot: string = DEFAULT_PROC_ROOT): Promise<string> {
  const fullPath = path.join(procRoot, String(pid), file);
  try {
    const handle = await fs.open(fullPath, "r");
    try {
      const buffer = Buffer.alloc(maxBytes);
      let filled = 0;
      // procfs may return less than asked per read (a command line comes a page at a time).
      for (;;) {
        const { bytesRead } = await handle.read(buffer, filled, maxBytes - filled, filled);
        filled += bytesRead;
        if (bytesRead === 0 || filled === maxBytes) break;
      }
      return buffer.subarray(0, filled).toString("utf8");
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw procReadError(err, pid, fullPath);
  }
}

export function procReadError(err: unknown, pid: number, fullPath: string): LockError {
  const code = errnoCode(err);
  // ESRCH: reading an already opened file of a process that just exited.
  if (code === "ENOENT" || code === "ESRCH") {
    return new LockError({ code: "ESRCH", pid, stage: "read", message: `process ${pid} does not exist (reading ${fullPath})` });
  }
  if (code === "EACCES" || code === "EPERM") {
    return new LockError({
      code: "EPERM",
      pid,
      stage: "read",
      message: `not allowed to read ${fullPath}`,
      hint: "run lockmem as the target's user or as root (reading smaps and task/*/syscall needs ptrace access)",
    });
  }
  return new LockError({
    code: "EINTERNAL",
    pid,
    stage: "read",
    message: `reading ${fullPath} failed: ${err instanceof Error ? err.message : String(err)}`,
  });
}

/** True when the error only means "that process is gone" (used to skip processes that exit while we scan). */
export function isVanishedProcess(err: unknown): boolean {
  return err instanceof LockError && err.code === "ESRCH";
}

/** A malformed /proc file is a kernel we do not understand, not bad input. */
export function procFormatError(file: string, detail: string): LockError {
  return new LockError({ code: "EINTERNAL", stage: "parse", message: `unexpected format in ${file}: ${detail}` });
}
