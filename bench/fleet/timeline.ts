// Where a lockmem phase's wall time goes, from LOCKMEM_TRACE (set it to a file to get this):
// the bench marks each phase (bench-start / bench-end, this process), and the provider
// stamps its steps in the dynamic-provider host (check, diff, op-start/op-end, dial,
// session, request-sent/reply). All stamps are ms since the epoch, so they line up across
// processes. The parts: until the first provider call (CLI and engine start, the program
// registering, the plugin starting and loading its closure), our operations, and after the
// last one (the engine finishing, the CLI exiting, the Automation API reading outputs).
import * as fs from "fs";
import { median } from "../measure";

interface Stamp {
  ms: number;
  pid: number;
  event: string;
  detail: string;
}

function parse(line: string): Stamp | undefined {
  const m = /^([\d.]+) (\d+) (\S+) ?(.*)$/.exec(line);
  return m ? { ms: Number(m[1]), pid: Number(m[2]), event: m[3], detail: m[4] } : undefined;
}

/** Durations between each `from` stamp and the next `to` stamp of the same process and key. */
function spans(stamps: Stamp[], from: string, to: string, key: (s: Stamp) => string): number[] {
  const open = new Map<string, number[]>();
  const out: number[] = [];
  for (const s of stamps) {
    const k = `${s.pid} ${key(s)}`;
    if (s.event === from) open.set(k, [...(open.get(k) ?? []), s.ms]);
    else if (s.event === to && open.get(k)?.length) out.push(s.ms - open.get(k)!.shift()!);
  }
  return out;
}

const f0 = (v: number): string => v.toFixed(0);

function summary(xs: number[], name: string): string {
  return xs.length ? `${name} median ${f0(median(xs))} ms max ${f0(Math.max(...xs))} ms (${xs.length})` : "";
}

/** One line about the phase `label` ("lockmem up"), or undefined without a trace. */
export function phaseTimeline(label: string): string | undefined {
  const file = process.env.LOCKMEM_TRACE;
  if (!file || !fs.existsSync(file)) return undefined;
  const all = fs.readFileSync(file, "utf8").split("\n").map(parse).filter((s): s is Stamp => s !== undefined);
  const start = all.filter((s) => s.pid === process.pid && s.event === "bench-start" && s.detail === label).pop();
  const end = start && all.find((s) => s.pid === process.pid && s.event === "bench-end" && s.detail === label && s.ms >= start.ms);
  if (!start || !end) return undefined;
  const inside = all.filter((s) => s.ms >= start.ms && s.ms <= end.ms && s.pid !== process.pid);
  const at = (s: Stamp | undefined): string => (s ? `+${f0(s.ms - start.ms)}` : "-");
  const ops = inside.filter((s) => s.event === "op-start" || s.event === "op-end");
  const parts = [
    `${label}: first provider call ${at(inside[0])} ms (${inside[0]?.event ?? "none"})`,
    `first op ${at(ops[0])}`,
    `last op end ${at(ops[ops.length - 1])}`,
    `last provider stamp ${at(inside[inside.length - 1])}`,
    `phase end ${at(end)} ms; ${new Set(inside.map((s) => s.pid)).size} provider process(es)`,
    summary(spans(inside, "op-start", "op-end", (s) => s.detail), "op"),
    summary(spans(inside, "dial-start", "dial-end", (s) => s.detail), "dial"),
    summary(spans(inside, "session-exec", "session-open", (s) => s.detail), "agent channel open"),
    summary(spans(inside, "request-sent", "reply", (s) => s.detail.split(" ")[0]), "request->reply"),
  ];
  return parts.filter(Boolean).join(", ");
}
