// The waiters fixture (tests/fixtures/waiters.c) running in a guest (tests/support/guest.ts),
// its counts read over SSH with busybox od: the guest tests' view of which blocking calls
// returned EINTR. One copy for every guest suite (arm64, kernels, arm64-fault).
import { Guest } from "./guest";
import { waitUntil } from "./target";

export interface GuestWaiters {
  pid: number;
  /** EINTRs seen so far, by call ("main" for a `main=<call>` thread). */
  eintrs(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

/**
 * Starts /tmp/waiters (uploaded by the suite) with one thread per kind; resolves once all
 * block. `pidNamespace`: as pid 1 of a child pid namespace (busybox `unshare -p -f`), as in
 * a container; `pid` is then its pid in the guest's own namespace.
 */
export async function startGuestWaiters(guest: Guest, kinds: string[], opts: { pidNamespace?: boolean } = {}): Promise<GuestWaiters> {
  const counts = `/tmp/waiters-${Math.random().toString(36).slice(2)}.counts`;
  const prefix = opts.pidNamespace ? "unshare -p -f " : "";
  const started = Number((await guest.check(`${prefix}/tmp/waiters ${counts} ${kinds.join(" ")} </dev/null >/dev/null 2>&1 & echo $!`)).trim());
  const pid = opts.pidNamespace ? await onlyChild(guest, started) : started;
  const words = async (): Promise<number[]> =>
    (await guest.run(`od -An -td8 -v ${counts}`)).stdout.split(/\s+/).filter(Boolean).map(Number);
  await waitUntil(async () => (await words())[1] === 1, `waiters ${pid} in the guest to block in its calls`, { timeoutMs: 60_000, intervalMs: 200 });
  const names: string[] = kinds.filter((k) => !k.startsWith("main="));
  const hasMain = kinds[0]?.startsWith("main=") ?? false;
  return {
    pid,
    async eintrs() {
      const w = await words();
      const out: Record<string, number> = {};
      names.forEach((name, i) => (out[name] = (out[name] ?? 0) + w[2 + i]));
      if (hasMain) out.main = w[2 + names.length];
      return out;
    },
    async stop() {
      await guest.run(`kill -9 ${pid}; rm -f ${counts}`);
    },
  };
}

/** The one child of `parent` in the guest (unshare -f forks the namespace's init). */
async function onlyChild(guest: Guest, parent: number): Promise<number> {
  return waitUntil(
    async () => {
      const kids = (await guest.run(`cat /proc/${parent}/task/${parent}/children`)).stdout.trim();
      return /^\d+$/.test(kids) ? Number(kids) : undefined;
    },
    `the child of unshare ${parent} in the guest`,
    { timeoutMs: 60_000, intervalMs: 200 },
  );
}

/** The counts that changed between two readings of eintrs(). */
export function eintrDiff(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, n]) => [k, n - (before[k] ?? 0)] as [string, number]).filter(([, n]) => n !== 0));
}
