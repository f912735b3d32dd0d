// What the provider knows of a transport besides running requests: how its settings are
// checked (`check`, dialing nothing), which machine they name (`diff`: another machine
// means other processes, so a replacement), and how it is named in messages. `check`,
// `diff` and the runner ask `transportKind()`, so a new transport is its files in this
// folder plus one entry here (and its deployment, if the provider installs the agent).
import { DEFAULT_SSH_PORT, DEFAULT_SSH_USER, SshConnection, validateSshConnection } from "./ssh-settings";
import { TransportError } from "./types";

export interface TransportKind {
  /** The problem with the settings, in the resource's words ("connection: ..."), or undefined. */
  check(): string | undefined;
  /** Which machine the settings name: stable text, compared by `diff`. */
  machine(): string;
  /** "ssh root@db1:22" or "local": for messages, never holding a secret. */
  where(): string;
}

function sshKind(conn: SshConnection): TransportKind {
  return {
    check() {
      if (typeof conn !== "object" || conn === null || Array.isArray(conn)) return "must be an object with at least host";
      if (conn.privateKey === undefined && conn.password === undefined && conn.agentSocketPath === undefined && !process.env.SSH_AUTH_SOCK) {
        return "connection: no credentials: give privateKey, password or agentSocketPath";
      }
      try {
        // Host, port, user, dial settings, hostKey syntax and agentPath; dials nothing.
        validateSshConnection(conn);
      } catch (e) {
        // Transport messages name host, port and user only, never a credential.
        if (e instanceof TransportError) return `connection: ${e.message}${e.hint ? ` (${e.hint})` : ""}`;
        throw e;
      }
      return undefined;
    },
    machine: () => JSON.stringify([conn.host, conn.port ?? DEFAULT_SSH_PORT, conn.proxy ? [conn.proxy.host, conn.proxy.port ?? DEFAULT_SSH_PORT] : null]),
    where: () => `ssh ${conn.user ?? DEFAULT_SSH_USER}@${conn.host}:${conn.port ?? DEFAULT_SSH_PORT}`,
  };
}

const LOCAL: TransportKind = { check: () => undefined, machine: () => "local", where: () => "local" };

/** The transport the resource's inputs choose: SSH with a `connection`, this machine without. */
export function transportKind(connection: SshConnection | undefined): TransportKind {
  return connection === undefined ? LOCAL : sshKind(connection);
}
