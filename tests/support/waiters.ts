// The waiters fixture (tests/fixtures/waiters.c): one thread per blocking call, each
// counting the EINTRs it gets, read from a shared counts file. Daemonized (double fork)
// like every target: the code under test ptraces it, and a child of this process would
// have its ptrace stops reaped by Node's own waitpid.
import { execFileSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { waitUntil, workDir } from "./target";

let built: string | undefined;

function waitersBinary(): string {
  if (built) return built;
  const source = path.join(__dirname, "..", "fixtures", "waiters.c");
  const binary = path.join(workDir(), "bin", "waiters");
  if (!fs.existsSync(binary) || fs.statSync(binary).mtimeMs < fs.statSync(source).mtimeMs) {
    fs.mkdirSync(path.dirname(binary), { recursive: true });
    const tmp = `${binary}.${process.pid}.${crypto.randomBytes(4).toString("hex")}`;
    execFileSync("gcc", ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", tmp, source, "-lrt"], { stdio: ["ignore", "pipe", "pipe"] });
    fs.renameSync(tmp, binary);
  }
  built = binary;
  return binary;
}

export interface Waiters {
  pid: number;
  /** EINTR count per kind (summed over its threads); "main" for the main thread's call. */
  eintrs(): Record<string, number>;
  stop(): void;
}

const started = new Set<number>();

/** Starts the fixture with `kinds` ("epoll_wait", "futex:x500", optionally "main=KIND" first) and waits until every thread is in its call. */
export async function startWaiters(
  kinds: string[],
  opts: {
    /** A command that runs the fixture (unshare ..., sh -c ...): its pid is not the fixture's. */
    prefix?: string[];
    /** The fixture's pid from the pid of what was started (with a prefix). */
    resolvePid?: (startedPid: number) => Promise<number>;
  } = {},
): Promise<Waiters> {
  const counts = path.join(workDir(), `waiters-${process.pid}-${crypto.randomBytes(4).toString("hex")}.counts`);
  const argv = [...(opts.prefix ?? []), waitersBinary(), counts, ...kinds];
  const startedPid = Number(
    execFileSync("sh", ["-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", ...argv]).toString().trim(),
  );
  started.add(startedPid);
  const pid = opts.resolvePid ? await opts.resolvePid(startedPid) : startedPid;
  started.add(pid);
  const words = (): bigint[] => {
    const buf = fs.readFileSync(counts);
    const out: bigint[] = [];
    for (let i = 0; i + 8 <= buf.length; i += 8) out.push(buf.readBigInt64LE(i));
    return out;
  };
  await waitUntil(() => fs.existsSync(counts) && words()[1] === 1n, `waiters ${pid} to block in its calls`, { timeoutMs: 30_000 });
  const names: string[] = [];
  for (const k of kinds) {
    if (k.startsWith("main=")) continue;
    const [name, times] = k.split(":x");
    for (let i = 0; i < (times ? Number(times) : 1); i++) names.push(name);
  }
  const hasMain = kinds.length > 0 && kinds[0].startsWith("main=");
  return {
    pid,
    eintrs() {
      const w = words();
      const out: Record<string, number> = {};
      names.forEach((name, i) => (out[name] = (out[name] ?? 0) + Number(w[2 + i])));
      if (hasMain) out.main = Number(w[2 + names.length]);
      return out;
    },
    stop() {
      for (const p of [pid, startedPid]) {
        try {
          process.kill(p, "SIGKILL");
        } catch {
          // already gone
        }
        started.delete(p);
      }
      fs.rmSync(counts, { force: true });
    },
  };
}

export function stopAllWaiters(): void {
  for (const pid of started) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  started.clear();
}
