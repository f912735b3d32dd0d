// `pulumi up` entry for users with the Pulumi CLI:
//   pulumi config set --path 'hosts[0].name' db1
//   pulumi config set --path 'hosts[0].host' db1.example.com
//   pulumi config set --path 'hosts[0].hostKey' "$(ssh-keyscan -t ed25519 db1.example.com | cut -d' ' -f2-)"
//   pulumi config set --secret privateKey < ~/.ssh/id_ed25519
//   pulumi config set unit postgresql.service
import * as pulumi from "@pulumi/pulumi";
import { FleetHost, fleetProgram } from "./program";

const config = new pulumi.Config();
export = fleetProgram({
  hosts: config.requireObject<FleetHost[]>("hosts"),
  privateKey: config.requireSecret("privateKey"),
  target: { systemdUnit: config.require("unit") },
})();
