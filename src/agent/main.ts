// Stand-alone entry of the agent (the CLI's `lockmem agent` calls the same functions):
// one request per run, many with --serve, or the guardian of another lockmem process
// with --guardian (src/guardian.ts). Each branch loads only what it needs.
/* eslint-disable @typescript-eslint/no-require-imports */
if (process.argv.includes("--guardian")) {
  void (require("../guardian") as typeof import("../guardian")).guardianMain();
} else {
  const server = require("./server") as typeof import("./server");
  void (process.argv.includes("--serve") ? server.agentServe() : server.agentMain());
}
