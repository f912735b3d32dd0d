// status: what the kernel shows of each process (per-mapping lock state, like pmap -X), with
// the selection's totals when one is given. Reads /proc and lockmem's journals; never stops
// the target.
import * as os from "os";
import { deadSessions } from "../journal";
import { failedResult, perProcess, resolve } from "./per-process";
import { effectiveSelection } from "../select";
import { processReport } from "./report";
import { snapshot } from "./snapshot";
import { HostReport, ProcessReport, StatusRequest } from "./types";

export async function status(req: StatusRequest): Promise<HostReport<ProcessReport>> {
  const refs = await resolve(req);
  const processes = await perProcess(
    refs,
    async (ref) => withDeadSessions(processReport(await snapshot(ref), req.mappings === undefined ? undefined : effectiveSelection(req.mappings))),
    (ref, err) => failedResult(ref, err),
  );
  return { host: os.hostname(), processes };
}

async function withDeadSessions<R extends ProcessReport>(report: R): Promise<R> {
  const dead = await deadSessions(report.pid).catch(() => []);
  return dead.length > 0 ? { ...report, heldByDeadRun: dead } : report;
}
