// The host library: what the CLI and the agent call. Every function takes and returns
// JSON-able data (bigints are rendered as decimal strings), so the agent protocol is a
// thin wrapper. Flow per process: resolve -> snapshot (/proc) -> plan -> check limits ->
// apply in one ptrace session -> snapshot again to verify.
//
// This file is the public entry point only; each concern lives in src/ops/: the request and
// report shapes (types.ts), one file per operation (status, lock and plan, unlock, doctor),
// and what they share (snapshot, report, per-process, safety, memlock-limit, call-failure,
// session, apply, stop).
export type {
  ActionReport,
  DoctorCheck,
  DoctorProcess,
  HostReport,
  LimitReport,
  LockRequest,
  MappingReport,
  Outcome,
  ProcessReport,
  ProcessResult,
  SelectionSummary,
  StatusRequest,
  UnlockRequest,
} from "./ops/types";
export { status } from "./ops/status";
export { lock, plan } from "./ops/lock";
export { unlock } from "./ops/unlock";
export { doctor } from "./ops/doctor";
