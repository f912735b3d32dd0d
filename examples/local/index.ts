// `pulumi up` entry for users with the Pulumi CLI: `pulumi config set pid 1234`.
import * as pulumi from "@pulumi/pulumi";
import { localProgram } from "./program";

const config = new pulumi.Config();
export = localProgram({ pid: config.requireNumber("pid") })();
