// Which transport serves a resource: the one table. A transport is its folder here (its
// files, and a `kind` that checks its settings, names its machine and opens it) plus one
// line in TRANSPORTS; `check`, `diff` and the runner ask transportFor() and nothing else.
import { localKind } from "./local";
import { sshKind } from "./ssh/kind";
import { SshConnection } from "./ssh/settings";
import { TransportKind } from "./types";

/** Each takes the connection settings it serves and returns undefined for others; the first that takes them wins. */
const TRANSPORTS: Array<(connection: SshConnection | undefined) => TransportKind | undefined> = [
  localKind, // no connection: this machine
  sshKind, // any connection: SSH
];

/** The transport the resource's `connection` chooses. */
export function transportFor(connection: SshConnection | undefined): TransportKind {
  for (const kindOf of TRANSPORTS) {
    const kind = kindOf(connection);
    if (kind) return kind;
  }
  throw new Error("no transport takes these connection settings"); // unreachable: SSH takes every connection
}
