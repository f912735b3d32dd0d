// Stand-alone entry of the agent (the CLI's `lockmem agent` calls the same functions):
// one request per run, or many with --serve.
import { agentMain, agentServe } from "./server";

void (process.argv.includes("--serve") ? agentServe() : agentMain());
