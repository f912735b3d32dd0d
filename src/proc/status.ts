// /proc/PID/status: "Key:\tvalue" lines.
import { DEFAULT_PROC_ROOT, procFormatError, readProcFile } from "./read";

export type SeccompMode = 0 | 1 | 2;

export interface ProcessStatus {
  name: string;
  /** One letter, e.g. "S", "R", "T", "Z". */
  state: string;
  tgid: number;
  pid: number;
  ppid: number;
  uid: { real: number; effective: number };
  /** Bytes. 0 when the kernel omits the line (kernel threads, zombies). */
  vmSize: number;
  /** Virtual size of VMAs marked locked, bytes (not resident bytes: that is smaps `Locked:`). */
  vmLck: number;
  vmRss: number;
  capEff: bigint;
  /** 0 disabled, 1 strict, 2 filter. */
  seccomp: SeccompMode;
  tracerPid: number;
  /** Signals pending for this thread, for the whole process, and blocked. Bit n-1 is signal n. */
  sigPnd: bigint;
  shdPnd: bigint;
  sigBlk: bigint;
  threads: number;
}

/** Bit number of CAP_IPC_LOCK in the capability sets (linux/capability.h). */
export const CAP_IPC_LOCK = 14n;

function fieldsOf(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

export function parseStatus(text: string): ProcessStatus {
  const fields = fieldsOf(text);
  const required = (key: string): string => {
    const value = fields.get(key);
    if (value === undefined) throw procFormatError("status", `no ${key}: line`);
    return value;
  };
  const integer = (key: string): number => {
    const value = Number(required(key));
    if (!Number.isSafeInteger(value)) throw procFormatError("status", `${key} is not an integer`);
    return value;
  };
  const kilobytes = (key: string): number => {
    const value = fields.get(key);
    if (value === undefined) return 0;
    const match = /^(\d+) kB$/.exec(value);
    if (!match) throw procFormatError("status", `${key} is not "N kB": ${JSON.stringify(value)}`);
    return Number(match[1]) * 1024;
  };
  const hexMask = (key: string): bigint => {
    const value = required(key);
    if (!/^[0-9a-f]+$/i.test(value)) throw procFormatError("status", `${key} is not a hex mask`);
    return BigInt("0x" + value);
  };
  const uids = required("Uid").split(/\s+/).map(Number);
  const seccomp = Number(fields.get("Seccomp") ?? "0");
  if (seccomp !== 0 && seccomp !== 1 && seccomp !== 2) throw procFormatError("status", `Seccomp ${seccomp}`);
  return {
    name: required("Name"),
    state: required("State").charAt(0),
    tgid: integer("Tgid"),
    pid: integer("Pid"),
    ppid: integer("PPid"),
    uid: { real: uids[0], effective: uids[1] },
    vmSize: kilobytes("VmSize"),
    vmLck: kilobytes("VmLck"),
    vmRss: kilobytes("VmRSS"),
    capEff: hexMask("CapEff"),
    seccomp,
    tracerPid: integer("TracerPid"),
    sigPnd: hexMask("SigPnd"),
    shdPnd: hexMask("ShdPnd"),
    sigBlk: hexMask("SigBlk"),
    threads: integer("Threads"),
  };
}

/** Whether the target itself may lock memory beyond RLIMIT_MEMLOCK (the tracer's capabilities do not count). */
export function hasCapIpcLock(status: Pick<ProcessStatus, "capEff">): boolean {
  return ((status.capEff >> CAP_IPC_LOCK) & 1n) === 1n;
}

export async function readStatus(pid: number, procRoot: string = DEFAULT_PROC_ROOT): Promise<ProcessStatus> {
  return parseStatus(await readProcFile(pid, "status", procRoot));
}
