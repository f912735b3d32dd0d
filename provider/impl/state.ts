// The shapes the provider keeps in Pulumi state: the checked inputs, and the outputs that
// `create`, `update` and `read` report. Plain JSON only: state is serialized as is.
import { SshConnection } from "../transport/ssh";
import { AgentSettings } from "../transport/types";
import { SelectionSpec, TargetSpec } from "../../src/types";

export type { AgentInstall, AgentSettings } from "../transport/types";

/** Operation deadlines in milliseconds, taken from the resource's customTimeouts. */
export interface OperationTimeouts {
  create?: number;
  update?: number;
  delete?: number;
}

/** What `check` returns and every other method receives as inputs. */
export interface ProviderInputs {
  /** Absent: this machine. Secret in state. */
  connection?: SshConnection;
  agent?: AgentSettings;
  target: TargetSpec;
  mappings?: SelectionSpec;
  future?: boolean;
  onFault?: boolean;
  raiseMemlockLimit?: boolean;
  /** Not compared by diff: changing a deadline changes nothing on the host. */
  timeouts?: OperationTimeouts;
}

export interface LimitState {
  soft: string;
  hard: string;
}

/** One locked process as the last operation found it. */
export interface ProcessState {
  pid: number;
  /** With the pid, the identity of the process: a restarted target has another one. */
  startTime: string;
  /** Virtual bytes of selected mappings that are locked. */
  lockedBytes: number;
  lockedMappings: number;
  /** Selected mappings (lockable ones): when lockedMappings is lower, something is unlocked. */
  selectedMappings: number;
  memlockLimit: LimitState;
  /** The RLIMIT_MEMLOCK this resource set (raiseMemlockLimit), to spot a limit changed behind its back. */
  limitSetTo?: LimitState;
}

export interface ProviderOutputs extends ProviderInputs {
  /** The connection's host, or this machine's host name. */
  host: string;
  processes: ProcessState[];
  /** Sum over processes. */
  lockedBytes: number;
  /** False when the last read found drift: the next `up` repairs it. */
  inSync: boolean;
  /** What the last read found out of line, one sentence each (empty when in sync). */
  drift: string[];
  warnings: string[];
}
