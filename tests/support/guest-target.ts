// The target fixture (tests/fixtures/target.c, uploaded as /tmp/target) running in a guest:
// started with --daemonize, its counters read through its control socket by the guest's own
// Node (busybox has no Unix-socket client).
import { Guest } from "./guest";
import { TargetStats } from "./target";

export interface GuestTarget {
  pid: number;
  stats(): Promise<TargetStats>;
  stop(): Promise<void>;
}

// One command line, one JSON line back.
const CONTROL_JS = `const s=require("net").connect(process.argv[1]);let d="";s.on("data",(x)=>{d+=x;if(d.includes("\\n")){process.stdout.write(d);s.destroy();}});s.write(process.argv[2]+"\\n");`;

/** Starts /tmp/target with `flags` (and a control socket of its own); resolves once it is ready. */
export async function startGuestTarget(guest: Guest, flags: string): Promise<GuestTarget> {
  const sock = `/tmp/target-${Math.random().toString(36).slice(2)}.sock`;
  const ready = await guest.check(`/tmp/target ${flags} --control ${sock} --daemonize </dev/null`);
  const pid = Number(/ready pid=(\d+)/.exec(ready)?.[1]);
  if (!(pid > 0)) throw new Error(`the target in the guest did not say it was ready: ${ready}`);
  return {
    pid,
    async stats() {
      return JSON.parse(await guest.check(`node -e '${CONTROL_JS}' ${sock} stats`)) as TargetStats;
    },
    async stop() {
      await guest.run(`kill -9 ${pid}; rm -f ${sock}`);
    },
  };
}
