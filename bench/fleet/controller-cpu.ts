// Controller-side CPU of one Pulumi operation (the machine where `pulumi up` runs):
// - program: this process (process.cpuUsage): the Automation API, the inline program
//   registering resources and serializing each dynamic resource's provider closure;
// - children: /proc/self/stat cutime+cstime, exact once the CLI has exited and been
//   reaped: the engine and every plugin it started and reaped (dynamic-provider host,
//   the command plugin);
// - a split of the children by sampling their tree every SAMPLE_MS: a plugin's CPU is
//   its last sample (so its final < SAMPLE_MS slice is missed, and a plugin that lived
//   less than SAMPLE_MS shows 0), and the engine is the exact children total minus the
//   sampled plugins (so it gets those slices). The sampling itself costs this process
//   a little (a few /proc reads per sample), counted in "program".
// It also notes when each plugin process started, relative to the meter's start (field 22
// of /proc/PID/stat against /proc/uptime, both time since boot, in clock ticks of 10 ms).
import * as fs from "fs";
import * as path from "path";
import { descendants } from "../../tests/support/sshd";
import { CLK_TCK, procCpuMs } from "./host-cpu";

const SAMPLE_MS = 100;

export type ControllerPart = "program" | "engine" | "dynamicHost" | "commandPlugin";
export type ControllerCpu = Record<ControllerPart, number>;

function classify(pid: number): ControllerPart | undefined {
  let argv: string[];
  try {
    argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return undefined;
  }
  if (argv.some((a) => a.includes("dynamic-provider"))) return "dynamicHost";
  if (path.basename(argv[0]) === "pulumi-resource-command") return "commandPlugin";
  return undefined;
}

export interface ControllerMeter {
  /** Stops sampling and returns the CPU (ms) used since start. */
  stop(): ControllerCpu;
  /** ms after the meter's start at which the first process of each plugin kind started. */
  starts(): Partial<Record<ControllerPart, number>>;
}

const uptimeMs = (): number => Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]) * 1000;

/** Field 22 of /proc/PID/stat: start time since boot, in ms. */
function startedMs(pid: number): number | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return (Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[19]) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

export function startControllerMeter(): ControllerMeter {
  const self0 = process.cpuUsage();
  const children0 = procCpuMs("self")!.children;
  const up0 = uptimeMs();
  const plugins = new Map<number, { part: ControllerPart; ms: number; started?: number }>();
  const sample = (): void => {
    for (const pid of descendants(process.pid)) {
      const known = plugins.get(pid);
      const part = known?.part ?? classify(pid);
      const cpu = part && procCpuMs(pid);
      if (part && cpu) plugins.set(pid, { part, ms: cpu.own + cpu.children, started: known ? known.started : startedMs(pid) });
    }
  };
  const timer = setInterval(sample, SAMPLE_MS);
  return {
    stop(): ControllerCpu {
      clearInterval(timer);
      const self = process.cpuUsage(self0);
      const children = procCpuMs("self")!.children - children0;
      const out: ControllerCpu = { program: (self.user + self.system) / 1000, engine: 0, dynamicHost: 0, commandPlugin: 0 };
      for (const p of plugins.values()) out[p.part] += p.ms;
      out.engine = Math.max(0, children - out.dynamicHost - out.commandPlugin);
      return out;
    },
    starts() {
      const out: Partial<Record<ControllerPart, number>> = {};
      for (const p of plugins.values()) {
        if (p.started !== undefined) out[p.part] = Math.min(out[p.part] ?? Infinity, p.started - up0);
      }
      return out;
    },
  };
}

export function controllerTotal(c: ControllerCpu): number {
  return c.program + c.engine + c.dynamicHost + c.commandPlugin;
}
