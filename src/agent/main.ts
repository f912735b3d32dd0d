// Stand-alone entry of the agent (the CLI's `lockmem agent` calls the same agentMain).
import { agentMain } from "./server";

void agentMain();
