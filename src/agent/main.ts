// Stand-alone entry of the agent (the CLI's `lockmem agent` calls the same functions):
// one request per run, many with --serve, or the guardian of another lockmem process
// with --guardian (src/guardian.ts). Each branch loads only what it needs.
/* eslint-disable @typescript-eslint/no-require-imports */
import { loadVerifiedAddon } from "./verified-addon";

try {
  // The bundle loads the addon its bootstrap verified now, before any request is read.
  loadVerifiedAddon();
} catch (e) {
  process.stderr.write(`lockmem agent: ${(e as Error).message}${(e as { hint?: string }).hint ? ` (${(e as { hint?: string }).hint})` : ""}\n`);
  process.exit(1);
}

if (process.argv.includes("--guardian")) {
  void (require("../guardian") as typeof import("../guardian")).guardianMain();
} else if (process.argv.includes("--serve")) {
  void (require("./serve") as typeof import("./serve")).agentServe();
} else {
  void (require("./server") as typeof import("./server")).agentMain();
}
