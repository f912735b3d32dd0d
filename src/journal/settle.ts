// What recovery waits for before it judges the target's state: the dead owner's ptrace
// links gone, its SIGSTOP taken, the held thread out of our injected call. All read from
// /proc, polled every millisecond up to a deadline.
import { promises as fs } from "fs";
import { readStat } from "../proc/stat";
import { parseStatus } from "../proc/status";

/** The process state, when `pid` is still the process that started at `startTime`. */
export async function currentState(pid: number, startTime: string): Promise<string | undefined> {
  try {
    const stat = await readStat(pid);
    return stat.startTime === startTime ? stat.state : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The owner died while it traced the target: the kernel detaches its tracees only late in
 * its exit, after its files (our lock, the guardian's pipe) are closed. Wait for that.
 */
export async function waitUntilUntraced(pid: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    // Every thread: the dead run's seized waiters are let go only as its tracer thread
    // exits, and one still traced cannot be re-armed (its seize fails).
    const tids = await fs.readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
    const traced = await Promise.all(
      tids.map((t) =>
        fs.readFile(`/proc/${pid}/task/${t}/status`, "utf8").then(
          (text) => parseStatus(text).tracerPid !== 0,
          () => false,
        ),
      ),
    );
    if (!traced.includes(true) || Date.now() > until) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * The dead run's SIGSTOP may still be pending (the guardian starts within milliseconds):
 * once its tracer is gone, the process takes it and completes the group stop by itself.
 * Recovering before that would see it arrive mid-recovery, with another session's cookie,
 * and keep the process stopped as if someone else had asked for it.
 */
export async function waitUntilStopTaken(pid: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  const SIGSTOP_BIT = 1n << 18n;
  for (;;) {
    let pending = 0n;
    try {
      const text = await fs.readFile(`/proc/${pid}/status`, "utf8");
      const m = /\nShdPnd:\s*([0-9a-f]+)/.exec(text);
      pending = m ? BigInt("0x" + m[1]) : 0n;
    } catch {
      return; // gone
    }
    if ((pending & SIGSTOP_BIT) === 0n || Date.now() > until) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** The process state once thread `tid` is no longer busy in the kernel (R or D), or at the deadline. */
export async function waitWhileInKernel(pid: number, tid: number, ms: number): Promise<string | undefined> {
  const until = Date.now() + ms;
  for (;;) {
    let threadState: string | undefined;
    try {
      const text = await fs.readFile(`/proc/${pid}/task/${tid}/stat`, "utf8");
      threadState = text.slice(text.lastIndexOf(")") + 2).split(" ")[0];
    } catch {
      threadState = undefined;
    }
    if ((threadState !== "R" && threadState !== "D") || Date.now() > until) {
      try {
        return (await readStat(pid)).state;
      } catch {
        return undefined;
      }
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}
