// The agent's view of the per-target lock (src/target-lock.ts): the same lock the CLI and
// the library take.
export { DEFAULT_TARGET_WAIT_MS, HeldTargetLock, lockTargets, TargetLockOptions, withTargetLocks } from "../target-lock";
