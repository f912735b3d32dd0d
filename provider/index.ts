// pulumi-lockmem: the `LockedProcessMemory` Pulumi resource (see README "Pulumi").
export {
  AgentArgs,
  ConnectionArgs,
  LockedProcessInfo,
  LockedProcessMemory,
  LockedProcessMemoryArgs,
  MappingsArgs,
  TargetArgs,
} from "./resource";
export { closeAll as closeConnections } from "./transport/ssh";
