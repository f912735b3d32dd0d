// Stand-alone entry of the agent (the CLI's `lockmem agent` calls the same functions):
// one request per run, or many with --serve.
import { agentMain, agentServe } from "./server";
import { loadVerifiedAddon } from "./verified-addon";

try {
  // The bundle loads the addon its bootstrap verified now, before any request is read.
  loadVerifiedAddon();
} catch (e) {
  process.stderr.write(`lockmem agent: ${(e as Error).message}${(e as { hint?: string }).hint ? ` (${(e as { hint?: string }).hint})` : ""}\n`);
  process.exit(1);
}

void (process.argv.includes("--serve") ? agentServe() : agentMain());
