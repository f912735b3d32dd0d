// The SSH transport, one file per concern:
//   settings.ts     the connection fields (@pulumi/command's), checked; endpoints; the agent command line
//   known-hosts.ts  host keys: the hostKey field and known_hosts files
//   dial.ts         one hop: TCP or jump-host channel, handshake, host key, auth (the retries of dialing)
//   pool.ts         connections shared per host and credentials (one redial of a connection found dead)
//   exec.ts         one command on a connection: the one output collector, one-shot agent runs
//   session.ts      the persistent agent (`--serve`), a JSON line per request
//   transport.ts    SshTransport: the version handshake and a request, on exec or the session
//   deployed.ts     this package's agent, deployed by the provider (agent.install "auto")
//   kind.ts         what transportFor() (../index.ts) knows of SSH: check, machine, where, open
export { SshTransport, SshTransportOptions, sshTransport } from "./transport";
export type { SshConnection, SshProxyConnection } from "./settings";
export { closeAll, pooledConnectionCount, withSshClient } from "./pool";
