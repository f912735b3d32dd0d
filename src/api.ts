// The host library: what the CLI and the agent call. Every function is JSON in, JSON out
// (bigints are rendered as decimal strings), so the agent protocol is a thin wrapper.
import { SelectionSpec, TargetSpec } from "./types";

export interface LockRequest {
  target: TargetSpec;
  mappings?: SelectionSpec;
  /** MCL_FUTURE: also lock mappings created later. */
  future?: boolean;
  /** MLOCK_ONFAULT / MCL_ONFAULT: lock pages only as they become resident. */
  onFault?: boolean;
  /** Raise the target's RLIMIT_MEMLOCK to what the plan needs (restored on unlock). */
  raiseMemlockLimit?: boolean;
  dryRun?: boolean;
}

export interface UnlockRequest {
  target: TargetSpec;
  mappings?: SelectionSpec;
  /** Also clear MCL_FUTURE. Implied by mappings.all. */
  future?: boolean;
  dryRun?: boolean;
}

export interface StatusRequest {
  target: TargetSpec;
  /** When given, each mapping reports whether it is selected, and the totals of the selection. */
  mappings?: SelectionSpec;
}
